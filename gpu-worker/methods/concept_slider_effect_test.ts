/**
 * Concept Sliders measured on the tiny model (figures in BENCHMARKS.md; SLIDER_SEED re-measures at another
 * training seed):
 * - a text slider for object size ("a large ..." vs "a small ...", preservation attributes naming colour,
 *   shape and background): along scales -2..2 the analyzer's radius rises monotonically (per-seed Spearman),
 *   while the largest object's colour, shape and position agree with the scale-0 image, and the image moves far
 *   less than when "large" / "small" is written into the prompt;
 * - a visual slider for brightness from rendered pairs (the same scene darkened and lightened): mean luminance
 *   rises with the scale; shape and position kept;
 * - an `erase` slider for the colour red (train method xattn) lowers the share of red objects for a prompt
 *   that asks for red, and leaves a blue one blue;
 * - with SLIDER_FULL=1, also the target not met yet: both sliders at once each moving their own measure about
 *   as much as alone.
 */
import { assert } from "../testing.ts";
import { EngineRunner } from "../ort/runner.ts";
import { type AdapterUse, StableDiffusionPipeline } from "../pipelines/stable_diffusion.ts";
import { sliderScale } from "../pipelines/sliders.ts";
import { toLoraWeights } from "../adapters/lora.ts";
import type { RgbImage } from "../image/png.ts";
import { renderScene } from "../shapesworld/render.ts";
import { sampleScene } from "../shapesworld/world.ts";
import { Rng } from "../random.ts";
import { mainObject, objectAgreement, pixelDistance, spearman } from "../eval/slider_effect.ts";
import { conceptSlider, type SliderPair } from "./concept_slider.ts";

const TINY = new URL("../../models/tiny-shapes", import.meta.url).pathname;
const SEED = Number(Deno.env.get("SLIDER_SEED") ?? 0);
/**
 * SLIDER_FULL=1 also measures and asserts the target this model does not meet yet (two sliders at once
 * each within 25% of its move alone); see BENCHMARKS.md for the figures. Off by default: it fails today.
 */
const FULL = !!Deno.env.get("SLIDER_FULL");
const SEEDS = 8;
const SCALES = [-2, -1, 0, 1, 2];
const GEN = { steps: 20, guidanceScale: 3 };
const PROMPT = "a red circle, white background";
const COMPOSE_PROMPT = "a red circle, blue background";
const MARGINS = {
  spearman: 0.9,
  agreement: 0.8,
  /** Slider's pixel distance (scale +-2 vs 0) over the prompt edit's ("large" / "small" written in). */
  structure: 0.5,
  brightnessSpearman: 0.9,
  /** |composed move| / |alone move| within 1 +- this. */
  composition: 0.25,
  /** Red share with the erase slider at 1 at most this share of it at 0. */
  erase: 0.5,
};
const ATTRIBUTES = [
  "red circle, white",
  "blue square, black",
  "green triangle, yellow",
  "yellow star, blue",
  "purple heart, white",
  "cyan diamond, black",
  "orange ring, gray",
  "pink cross, green",
];

const luminance = (img: RgbImage) => {
  let s = 0;
  for (let i = 0; i < img.rgb.length; i += 3) {
    s += 0.299 * img.rgb[i] + 0.587 * img.rgb[i + 1] + 0.114 * img.rgb[i + 2];
  }
  return s / (img.rgb.length / 3) / 255;
};
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

/** Brightness pairs: one rendered scene, darkened and lightened by `k`. */
function brightnessPairs(count: number, k: number): SliderPair[] {
  const rng = new Rng(77);
  return Array.from({ length: count }, () => {
    const img = renderScene(sampleScene(rng, { objectCount: 1 }));
    const low = { ...img, rgb: img.rgb.map((v) => Math.round(v * (1 - k))) };
    const high = { ...img, rgb: img.rgb.map((v) => Math.round(v + (255 - v) * k)) };
    return { low, high, scale: 1 };
  });
}

Deno.test({
  name:
    "Concept Sliders on the tiny model: size (text) and brightness (visual) move their attribute monotonically and keep the rest",
  sanitizeResources: false,
  fn: async () => {
    const runner = new EngineRunner();
    const log = (s: string) => console.log(s);
    try {
      const t0 = performance.now();
      const size = await conceptSlider(runner, {
        model: TINY,
        out: await Deno.makeTempDir({ prefix: "slider_size_" }),
        config: {
          target: "a {} background",
          neutral: "a {} background",
          positive: "a large {} background",
          negative: "a small {} background",
          attributes: ATTRIBUTES,
          steps: 300,
          max_denoising_steps: 20,
          seed: SEED,
        },
      });
      log(
        `size slider: ${((performance.now() - t0) / 1000).toFixed(0)} s, fixed-draw loss ${
          size.evalLoss.before.toFixed(3)
        } -> ${size.evalLoss.after.toFixed(3)}`,
      );
      const t1 = performance.now();
      const bright = await conceptSlider(runner, {
        model: TINY,
        out: await Deno.makeTempDir({ prefix: "slider_bright_" }),
        config: { kind: "visual", steps: 300, seed: SEED, learning_rate: 1e-3 },
        pairs: brightnessPairs(6, 0.35),
      });
      log(`brightness slider: ${((performance.now() - t1) / 1000).toFixed(0)} s`);
      const pipe = await StableDiffusionPipeline.load(TINY, runner);
      const use = (lora: ReturnType<typeof toLoraWeights>, s: number): AdapterUse => ({
        lora,
        scale: sliderScale(s),
      });
      const sizeLora = toLoraWeights(size.adapter), brightLora = toLoraWeights(bright.adapter);
      const gen = async (seed: number, adapters: AdapterUse[], prompt = PROMPT) =>
        (await pipe.generate({ ...GEN, prompt, seed, adapters })).images[0];

      // Size: radius along the scales, agreement with scale 0, structure against the prompt edit.
      const rho: number[] = [], brightRho: number[] = [];
      let agree = { colour: 0, shape: 0, position: 0 }, n = 0, brightKept = 0;
      const sliderDist: number[] = [], promptDist: number[] = [];
      const moves = {
        size: [] as number[],
        bright: [] as number[],
        sizeBoth: [] as number[],
        brightBoth: [] as number[],
      };
      for (let s = 0; s < SEEDS; s++) {
        const row: RgbImage[] = [];
        for (const sc of SCALES) row.push(sc === 0 ? await gen(s, []) : await gen(s, [use(sizeLora, sc)]));
        const base = row[2];
        const radii = row.map((img) => mainObject(img)?.radius ?? 0);
        rho.push(spearman(SCALES, radii));
        for (const [i, img] of row.entries()) {
          if (i === 2) continue;
          const a = objectAgreement(base, img);
          agree = {
            colour: agree.colour + +a.colour,
            shape: agree.shape + +a.shape,
            position: agree.position + +a.position,
          };
          n++;
        }
        sliderDist.push((pixelDistance(row[0], base) + pixelDistance(row[4], base)) / 2);
        const large = await gen(s, [], "a large red circle, white background");
        const small = await gen(s, [], "a small red circle, white background");
        promptDist.push((pixelDistance(large, base) + pixelDistance(small, base)) / 2);

        const lum = [];
        for (const sc of SCALES) {
          const img = sc === 0 ? base : await gen(s, [use(brightLora, sc)]);
          lum.push(luminance(img));
          if (sc !== 0) {
            const a = objectAgreement(base, img);
            brightKept += +(a.shape && a.position);
          }
        }
        brightRho.push(spearman(SCALES, lum));
        log(
          `seed ${s}: radius ${radii.map((r) => r.toFixed(2)).join(" ")}; luminance ${
            lum.map((l) => l.toFixed(3)).join(" ")
          }`,
        );
        if (!FULL) continue;
        // Composition on a mid-tone background: on white, lightening washes the object's edge into the
        // background and shrinks the analyzer's radius, which would mix the two measures.
        const radius = (img: RgbImage) => mainObject(img)?.radius ?? 0;
        const c0 = await gen(s, [], COMPOSE_PROMPT);
        const cSize = await gen(s, [use(sizeLora, 2)], COMPOSE_PROMPT);
        const cBright = await gen(s, [use(brightLora, 2)], COMPOSE_PROMPT);
        const both = await gen(s, [use(sizeLora, 2), use(brightLora, 2)], COMPOSE_PROMPT);
        moves.size.push(radius(cSize) - radius(c0));
        moves.bright.push(luminance(cBright) - luminance(c0));
        moves.sizeBoth.push(radius(both) - radius(c0));
        moves.brightBoth.push(luminance(both) - luminance(c0));
      }
      const share = (k: number) => k / n;
      const sizeRatio = mean(moves.sizeBoth) / mean(moves.size),
        brightRatio = mean(moves.brightBoth) / mean(moves.bright);
      log(
        `size: Spearman mean ${mean(rho).toFixed(3)} (min ${Math.min(...rho).toFixed(2)}); agreement colour ${
          share(agree.colour).toFixed(2)
        } ` +
          `shape ${share(agree.shape).toFixed(2)} position ${
            share(agree.position).toFixed(2)
          }; pixel distance slider ${mean(sliderDist).toFixed(3)} ` +
          `vs prompt edit ${mean(promptDist).toFixed(3)}`,
      );
      log(
        `brightness: Spearman mean ${mean(brightRho).toFixed(3)} (min ${
          Math.min(...brightRho).toFixed(2)
        }); shape+position kept ${(brightKept / n).toFixed(2)}`,
      );
      assert(mean(rho) >= MARGINS.spearman, `size Spearman ${mean(rho)}`);
      for (const k of ["colour", "shape", "position"] as const) {
        assert(share(agree[k]) >= MARGINS.agreement, `size slider keeps ${k} in ${share(agree[k])}`);
      }
      assert(mean(sliderDist) <= MARGINS.structure * mean(promptDist), "structure: slider vs prompt edit");
      assert(mean(brightRho) >= MARGINS.brightnessSpearman, `brightness Spearman ${mean(brightRho)}`);
      assert(brightKept / n >= MARGINS.agreement, `brightness keeps shape and position in ${brightKept / n}`);

      // Erase red: the share of red main objects for a prompt asking for red, slider at 1 vs off.
      const t2 = performance.now();
      const erase = await conceptSlider(runner, {
        model: TINY,
        out: await Deno.makeTempDir({ prefix: "slider_erase_" }),
        config: {
          target: "a red {} background",
          neutral: "a red {} background",
          positive: "a red {} background",
          negative: "a {} background",
          action: "erase",
          attributes: ["circle, white", "square, black", "star, yellow", "heart, blue", "diamond, gray"],
          steps: 300,
          learning_rate: 6e-4,
          // Colour comes from the text through cross-attention: erase there (ESD-x), not in attn1.
          train_method: "xattn",
          max_denoising_steps: 20,
          seed: SEED,
        },
      });
      log(`erase slider: ${((performance.now() - t2) / 1000).toFixed(0)} s`);
      const eraseLora = toLoraWeights(erase.adapter);
      let redOff = 0, redOn = 0, blueOff = 0, blueOn = 0;
      const BLUE = "a blue circle, white background";
      for (let s = 0; s < SEEDS; s++) {
        redOff += +(mainObject(await gen(s, []))?.colour === "red");
        redOn += +(mainObject(await gen(s, [use(eraseLora, 1)]))?.colour === "red");
        blueOff += +(mainObject(await gen(s, [], BLUE))?.colour === "blue");
        blueOn += +(mainObject(await gen(s, [use(eraseLora, 1)], BLUE))?.colour === "blue");
      }
      log(
        `erase red: red main objects ${redOff}/${SEEDS} without, ${redOn}/${SEEDS} with the slider at 1; ` +
          `"${BLUE}": blue ${blueOff}/${SEEDS} without, ${blueOn}/${SEEDS} with`,
      );
      assert(redOn <= MARGINS.erase * redOff, `erase: red ${redOn} vs ${redOff}`);
      assert(blueOn >= MARGINS.agreement * blueOff, `erase keeps blue: ${blueOn} vs ${blueOff}`);

      if (!FULL) return;

      log(
        `composition: size move alone ${mean(moves.size).toFixed(3)} with both ${
          mean(moves.sizeBoth).toFixed(3)
        } (x${sizeRatio.toFixed(2)}); ` +
          `brightness alone ${mean(moves.bright).toFixed(3)} with both ${
            mean(moves.brightBoth).toFixed(3)
          } (x${brightRatio.toFixed(2)})`,
      );

      assert(Math.abs(sizeRatio - 1) <= MARGINS.composition, `size move composed x${sizeRatio}`);
      assert(Math.abs(brightRatio - 1) <= MARGINS.composition, `brightness move composed x${brightRatio}`);
    } finally {
      runner.terminate();
    }
  },
});
