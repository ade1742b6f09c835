/**
 * How well Prompt-Free generation keeps a reference's content, on the tiny ShapesWorld model, with the analytic
 * checks of `shapesworld/analysis.ts`: for each held-out scene of `heldOutPrompts` (attribute combinations never
 * rendered in the base model's or the SeeCoder's training), its render is the reference; the variation made
 * from it (SeeCoder's embeddings, zeros unconditional, CFG 2.0) is analyzed for the reference's background
 * colour, object colour and shape. Two baselines on the same scenes and seeds: zero embeddings (the
 * unconditional model: what the reference adds), and the text prompt that describes the scene (the base
 * model's prompt following at its evaluation guidance, 3). Besides the rates, the mean absolute pixel
 * difference to the reference render (0..255) says which output is closer to the reference as an image.
 *
 * @example
 * ```ts
 * const r = await evaluateReferenceFidelity(pipe, { count: 24, seed: 1 });
 * r.reference.rates.colour; r.zeros.rates.colour; r.text.rates.colour;
 * ```
 */
import type { StableDiffusionPipeline } from "../pipelines/stable_diffusion.ts";
import { REFERENCE_GUIDANCE_SCALE } from "../pipelines/reference_image.ts";
import { analyzeImage } from "../shapesworld/analysis.ts";
import { renderScene } from "../shapesworld/render.ts";
import type { Scene } from "../shapesworld/world.ts";
import type { RgbImage } from "../image/png.ts";
import { Tensor } from "../tensor.ts";
import { heldOutPrompts } from "./prompt_following.ts";

export type ReferenceMode = "reference" | "zeros" | "text";

export interface ReferenceFidelityOptions {
  count: number;
  seed?: number;
  steps?: number;
  /** Guidance of the reference-image generation (default 2.0, the official default). */
  guidanceScale?: number;
  /** Guidance of the text baseline (default 3, the tiny model's evaluation setting). */
  textGuidanceScale?: number;
  /** Which generations to run (default all three). */
  modes?: ReferenceMode[];
  keepImages?: boolean;
  onProgress?: (done: number, total: number) => void;
}

export interface ModeResult {
  rates: { background: number; colour: number; shape: number };
  /** Mean absolute difference to the reference render per channel value (0..255). */
  pixelDistance: number;
  images?: RgbImage[];
}

export interface ReferenceFidelityResult {
  count: number;
  scenes: Scene[];
  reference?: ModeResult;
  zeros?: ModeResult;
  text?: ModeResult;
}

function pixelDistance(a: RgbImage, b: RgbImage): number {
  let s = 0;
  for (let i = 0; i < a.rgb.length; i++) s += Math.abs(a.rgb[i] - b.rgb[i]);
  return s / a.rgb.length;
}

export async function evaluateReferenceFidelity(
  pipe: StableDiffusionPipeline,
  o: ReferenceFidelityOptions,
): Promise<ReferenceFidelityResult> {
  const seed = o.seed ?? 0;
  const steps = o.steps ?? 20;
  const modes = o.modes ?? ["reference", "zeros", "text"];
  const prompts = heldOutPrompts(o.count, seed);
  const enc = await pipe.referenceEncoder();
  const zeros = Tensor.zeros([1, enc.tokens, enc.hidden]);
  const out: ReferenceFidelityResult = { count: prompts.length, scenes: prompts.map((p) => p.scene) };
  let done = 0;
  for (const mode of modes) {
    let background = 0, colour = 0, shape = 0, dist = 0;
    const images: RgbImage[] = [];
    for (const [i, { scene, prompt }] of prompts.entries()) {
      const ref = renderScene(scene, 64);
      const common = { seed: seed * 100_003 + i, steps };
      const { images: [img] } = mode === "reference"
        ? await pipe.generate({
          ...common,
          referenceImage: ref,
          guidanceScale: o.guidanceScale ?? REFERENCE_GUIDANCE_SCALE,
        })
        : mode === "zeros"
        ? await pipe.generate({ ...common, promptEmbeds: zeros, guidanceScale: 1 })
        : await pipe.generate({ ...common, prompt, guidanceScale: o.textGuidanceScale ?? 3 });
      const a = analyzeImage(img);
      const want = scene.objects[0];
      const obj = a.objects.find((x) => x.colour === want.colour) ?? a.objects[0] ?? null;
      if (a.background === scene.background) background++;
      if (obj?.colour === want.colour) colour++;
      if (obj?.shape === want.shape) shape++;
      dist += pixelDistance(img, ref);
      if (o.keepImages) images.push(img);
      o.onProgress?.(++done, prompts.length * modes.length);
    }
    const n = prompts.length;
    out[mode] = {
      rates: { background: background / n, colour: colour / n, shape: shape / n },
      pixelDistance: dist / n,
      images: o.keepImages ? images : undefined,
    };
  }
  return out;
}
