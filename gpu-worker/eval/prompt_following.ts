/**
 * Prompt following of a ShapesWorld model, measured with analytic checks: generate an image for each of a
 * seeded set of held-out prompts (attribute combinations never seen in training), analyze it (background
 * colour, object colour, shape), and report the fraction right per attribute. Used by the pretraining
 * acceptance test and by `deno task eval` for the figures in BENCHMARKS.md.
 *
 * @example
 * ```ts
 * const r = await evaluatePromptFollowing(pipe, { count: 40, seed: 1 });
 * r.rates.background; // e.g. 0.95
 * ```
 */
import type { StableDiffusionPipeline } from "../pipelines/stable_diffusion.ts";
import { captionOf, sampleHeldOutScene, type Scene } from "../shapesworld/world.ts";
import { analyzeImage } from "../shapesworld/analysis.ts";
import { renderScene } from "../shapesworld/render.ts";
import { Rng } from "../random.ts";
import type { RgbImage } from "../image/png.ts";

export interface PromptFollowingOptions {
  count: number;
  seed?: number;
  steps?: number;
  guidanceScale?: number;
  guidanceRescale?: number;
  /** Also keep the images (for a contact sheet). */
  keepImages?: boolean;
  /** After each prompt: how many are done, of how many. */
  onProgress?: (done: number, total: number) => void;
}

export interface PromptFollowingSample {
  prompt: string;
  scene: Scene;
  background: boolean;
  colour: boolean;
  shape: boolean;
  found: { background: string; colour: string | null; shape: string | null };
  image?: RgbImage;
}

export interface PromptFollowingResult {
  rates: { background: number; colour: number; shape: number };
  samples: PromptFollowingSample[];
}

/** Held-out single-object scenes (medium or large, so shapes are big enough to judge), fully captioned. */
export function heldOutPrompts(count: number, seed: number): { scene: Scene; prompt: string }[] {
  return Array.from({ length: count }, (_, i) => {
    const scene = sampleHeldOutScene(Rng.derive(seed, 0x4e1d, i), {
      objectCount: 1,
      sizes: ["medium", "large"],
    });
    return { scene, prompt: captionOf(scene) };
  });
}

export async function evaluatePromptFollowing(
  pipe: StableDiffusionPipeline,
  o: PromptFollowingOptions,
): Promise<PromptFollowingResult> {
  const seed = o.seed ?? 0;
  const samples: PromptFollowingSample[] = [];
  const prompts = heldOutPrompts(o.count, seed);
  for (const [i, { scene, prompt }] of prompts.entries()) {
    const { images } = await pipe.generate({
      prompt,
      seed: seed * 100_003 + i,
      steps: o.steps ?? 20,
      guidanceScale: o.guidanceScale ?? 3,
      guidanceRescale: o.guidanceRescale ?? 0,
    });
    const a = analyzeImage(images[0]);
    const want = scene.objects[0];
    // The object that best matches the asked colour counts; else the largest one.
    const obj = a.objects.find((x) => x.colour === want.colour) ?? a.objects[0] ?? null;
    samples.push({
      prompt,
      scene,
      background: a.background === scene.background,
      colour: obj?.colour === want.colour,
      shape: obj?.shape === want.shape,
      found: { background: a.background, colour: obj?.colour ?? null, shape: obj?.shape ?? null },
      image: o.keepImages ? images[0] : undefined,
    });
    o.onProgress?.(i + 1, prompts.length);
  }
  const rate = (k: "background" | "colour" | "shape") => samples.filter((s) => s[k]).length / samples.length;
  return { rates: { background: rate("background"), colour: rate("colour"), shape: rate("shape") }, samples };
}

/**
 * The same checks on the VAE's reconstructions of the held-out scenes' renders (encode, decode; no diffusion):
 * the most a model with this VAE can score.
 */
export async function evaluateReconstruction(
  pipe: StableDiffusionPipeline,
  o: { count: number; seed?: number; onProgress?: (done: number, total: number) => void },
): Promise<{ count: number; rates: PromptFollowingResult["rates"] }> {
  let background = 0, colour = 0, shape = 0;
  const prompts = heldOutPrompts(o.count, o.seed ?? 0);
  for (const [i, { scene }] of prompts.entries()) {
    const [rec] = await pipe.decodeLatents(await pipe.encodeImages([renderScene(scene, 64)]));
    const a = analyzeImage(rec);
    const want = scene.objects[0];
    const obj = a.objects.find((x) => x.colour === want.colour) ?? a.objects[0] ?? null;
    if (a.background === scene.background) background++;
    if (obj?.colour === want.colour) colour++;
    if (obj?.shape === want.shape) shape++;
    o.onProgress?.(i + 1, prompts.length);
  }
  const n = prompts.length;
  return { count: n, rates: { background: background / n, colour: colour / n, shape: shape / n } };
}
