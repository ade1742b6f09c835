/**
 * DreamBooth's measured effect on the pretrained tiny ShapesWorld model (skipped while `models/tiny-shapes` is
 * still the random one, i.e. until the `PRETRAINED` marker file is there; `DREAMBOOTH_EFFECT_MODEL=<folder>`
 * runs it on another pretrained folder). LoRA DreamBooth on five images of a blue striped star, each on another
 * background and captioned like the world's own captions ("a sks star, gray background": this model always
 * saw the background named), with and without prior preservation, then, with the same seeds:
 *
 * 1. The subject in new contexts: "a sks star, orange background", "a sks star on the left, black
 *    background", ... (backgrounds, positions and sizes no training image had): the prompt's background is
 *    kept, and the images are clearly more faithful to the subject (ShapesWorld fidelity: shape, colour,
 *    texture, object colour histogram; and the foreground's colour histogram) than the base model's for the
 *    same prompts.
 * 2. Prior preservation (the paper's ablation): "a star" images (seeds unlike the class images') drift less
 *    from the base model's with the prior loss than without it, and the subject's colour leaks into the class
 *    far less (the language drift the prior loss exists to prevent).
 *
 * CI-sized: two 1600-step runs, 100 class images of 20 sampling steps, 80 evaluation images (about 3 minutes
 * on two idle CPU cores). The measured numbers are printed for calibrating the margins.
 */
import { assert } from "../testing.ts";
import { EngineRunner } from "../ort/runner.ts";
import { dreamBooth, type DreamBoothConfigInput, loadDreamBoothLora } from "./dreambooth.ts";
import { StableDiffusionPipeline } from "../pipelines/stable_diffusion.ts";
import { LORA_FILE_NAME } from "../adapters/lora.ts";
import {
  foregroundSimilarity,
  priorDrift,
  shapesWorldFidelity,
  subjectProfile,
} from "../eval/shapesworld_fidelity.ts";
import { analyzeImage } from "../shapesworld/analysis.ts";
import { renderScene } from "../shapesworld/render.ts";
import { type ColourName, sampleScene } from "../shapesworld/world.ts";
import type { RgbImage } from "../image/png.ts";
import type { TrainingImage } from "../training/data.ts";
import { Rng } from "../random.ts";

const DEFAULT_MODEL = new URL("../../models/tiny-shapes", import.meta.url).pathname;
const OVERRIDE = Deno.env.get("DREAMBOOTH_EFFECT_MODEL");
const MODEL = OVERRIDE ?? DEFAULT_MODEL;
const MARKER = `${DEFAULT_MODEL}/PRETRAINED`;
const ready = OVERRIDE !== undefined || await Deno.stat(MARKER).then(() => true, () => false);
const MISSING = `${MARKER} does not exist: the committed tiny model is still random, so there is no ` +
  `effect to measure (set DREAMBOOTH_EFFECT_MODEL=<pretrained folder> to run it elsewhere)`;

/**
 * Margins asserted. Measured with training seeds 0 / 1 (CONFIG.seed; evaluation seeds fixed): new-context
 * fidelity 0.149 / 0.250 vs base 0.034, foreground similarity 0.088 / 0.124 vs 0.013, prompt background kept
 * 1 / 1; "a star" drift with / without prior 0.116 / 0.154 and 0.126 / 0.168 (ratios 0.75, 0.75); subject
 * colour in "a star" with / without prior 0.06 / 0.38 and 0 / 0.44 (base 0), object histogram 0.028 / 0.098
 * and 0.023 / 0.083. At 400 steps the drift ratio was 0.95 / 0.69: the binding needs the longer run.
 * After the backward convolutions were reformulated (same gradients, other float rounding), the drift ratios
 * were 0.875 (0.1163 / 0.1329) and 0.707 (0.1203 / 0.1701): the ratio varies with the run by about +-0.1, so
 * 0.95 is asserted; with no effect (the prior loss off, or a model where it does not help) it is near or
 * above 1. `DB_SEED=1 deno test -A gpu-worker/methods/dreambooth_effect_test.ts` re-measures at another seed.
 * Fifth session, the installed model (it draws stars and backgrounds far better than the first): at 800 steps
 * seed 0 passed (new-context fidelity 0.304 vs base 0.108) but seed 1 did not (0.092 vs 0.108: the subject
 * had not bound yet), so the runs are 1600 steps: seeds 0 / 1 give new-context fidelity 0.256 / 0.265 vs
 * 0.108, foreground 0.149 / 0.246 vs 0.057, background kept 0.75 / 1, drift with / without prior 0.117 /
 * 0.282 and 0.164 / 0.232 (ratios 0.41, 0.71), subject colour in "a star" 0.25 / 0.875 and 0.375 / 0.875
 * (base 0.25: this model draws some blue stars unasked).
 */
const MARGINS = {
  /** New-context ShapesWorld fidelity score, trained minus base. */
  contextFidelityGain: 0.08,
  /** New-context foreground colour-histogram similarity to the subject, trained minus base. */
  contextForegroundGain: 0.03,
  /** Share of new-context images whose background is the prompt's (the subject does not override it). */
  contextBackground: 0.75,
  /** Pixel drift of "a star" from the base with prior preservation, relative to without. */
  driftRatio: 0.95,
  /** Share of "a star" images whose object has the subject's colour, without prior preservation minus with. */
  leakReduction: 0.2,
  /** Object colour-histogram similarity of "a star" images to the subject, without prior minus with. */
  leakHistogramReduction: 0.03,
};

const CONFIG: DreamBoothConfigInput = {
  class_word: "star",
  steps: 1600,
  learning_rate: 2e-3,
  num_class_images: 100,
  /** DreamBooth's training seed; `DB_SEED` sets another to re-measure the margins. */
  seed: Number(Deno.env.get("DB_SEED") ?? 0),
  class_sampling_steps: 20,
  class_guidance_scale: 5,
};
const SAMPLING = { steps: 20, guidanceScale: 5 };
/** The subject's backgrounds in training; the contexts' are none of them (nor its blue). */
const SUBJECT_BACKGROUNDS: ColourName[] = ["white", "gray", "pink", "cyan", "brown"];
const CONTEXTS: { prompt: string; background: ColourName }[] = [
  { prompt: "a sks star, orange background", background: "orange" },
  { prompt: "a sks star on the left, black background", background: "black" },
  { prompt: "a large sks star, yellow background", background: "yellow" },
  { prompt: "a sks star at the top, green background", background: "green" },
];
/** Images per context prompt, and of "a star" four times as many. */
const PER_CONTEXT = 4;
/** Evaluation seeds, far from the class images' (0..num_class_images-1). */
const EVAL_SEED = 10_000;

function subjectImages(): TrainingImage[] {
  return SUBJECT_BACKGROUNDS.map((background, i) => ({
    path: `star${i}.png`,
    stem: `star${i}`,
    caption: `a sks star, ${background} background`,
    image: renderScene(
      sampleScene(new Rng(100 + i), {
        objectCount: 1,
        shapes: ["star"],
        colours: ["blue"],
        textures: ["striped"],
        backgrounds: [background],
        sizes: ["medium", "large"],
      }),
      64,
    ),
  }));
}

Deno.test({
  name: `DreamBooth shows the subject in new contexts; prior preservation keeps "a star" near the base`,
  fn: async () => {
    // A missing model is a failure, not a skip: a suite that skips its effect tests shows nothing.
    if (!ready) throw new Error(MISSING);
    const dir = await Deno.makeTempDir({ prefix: "dreambooth_effect_" });
    const runner = new EngineRunner();
    try {
      const images = subjectImages();
      const train = async (name: string, prior: boolean) => {
        const t0 = performance.now();
        const r = await dreamBooth(runner, {
          model: MODEL,
          images,
          out: `${dir}/${name}`,
          cacheDir: `${dir}/cache`,
          config: { ...CONFIG, with_prior_preservation: prior },
        });
        console.log(
          `${name}: eval loss ${r.evalLoss.before.toFixed(4)} -> ${r.evalLoss.after.toFixed(4)}, ` +
            `${((performance.now() - t0) / 1000).toFixed(0)} s, class images ${
              JSON.stringify(r.classImages)
            }`,
        );
        return loadDreamBoothLora(await Deno.readFile(`${dir}/${name}/${LORA_FILE_NAME}`), name).lora;
      };
      const withPrior = await train("prior", true);
      const without = await train("no-prior", false);

      const pipe = await StableDiffusionPipeline.load(MODEL, runner, { cacheDir: `${dir}/onnx` });
      try {
        const gen = async (prompt: string, seed: number, lora?: typeof withPrior) =>
          (await pipe.generate({
            prompt,
            seed,
            steps: SAMPLING.steps,
            guidanceScale: SAMPLING.guidanceScale,
            adapters: lora ? [{ lora, scale: 1 }] : [],
          })).images[0];
        const batch = async (prompts: string[], lora?: typeof withPrior) => {
          const out: RgbImage[] = [];
          for (const [i, p] of prompts.entries()) out.push(await gen(p, EVAL_SEED + i, lora));
          return out;
        };

        const profile = subjectProfile(images.map((i) => i.image));
        /** Fidelity to the subject and the share of backgrounds as asked, of one set of images. */
        const measure = (label: string, imgs: RgbImage[], background?: (i: number) => ColourName) => {
          const f = shapesWorldFidelity(imgs, profile);
          const foreground = foregroundSimilarity(imgs, profile);
          const kept = background
            ? imgs.filter((img, i) => analyzeImage(img).background === background(i)).length / imgs.length
            : NaN;
          console.log(
            `${label.padEnd(26)} fidelity ${f.score.toFixed(3)} (shape ${f.shape}, colour ${f.colour}, ` +
              `texture ${f.texture}, histogram ${f.histogram.toFixed(3)}); foreground ${
                foreground.toFixed(3)
              }${background ? `; background as asked in ${kept}` : ""}`,
          );
          return { score: f.score, colour: f.colour, histogram: f.histogram, foreground, background: kept };
        };

        // 0. For the record: the subject in a training context.
        const inst = Array(8).fill("a sks star, white background");
        measure(`"${inst[0]}" base`, await batch(inst));
        measure(`"${inst[0]}" trained`, await batch(inst, withPrior));

        // 1. The subject in new contexts.
        const ctx = CONTEXTS.flatMap((c) => Array(PER_CONTEXT).fill(c.prompt));
        const ctxBackground = (i: number) => CONTEXTS[Math.floor(i / PER_CONTEXT)].background;
        const ctxBase = measure("new contexts base", await batch(ctx), ctxBackground);
        const ctxPp = measure("new contexts trained", await batch(ctx, withPrior), ctxBackground);

        // 2. Prior preservation: "a star" with the same seeds, base vs each trained model; the subject's colour
        // leaking into the class is the language drift the paper's prior loss prevents.
        const cls = Array(4 * PER_CONTEXT).fill("a star");
        const base = await batch(cls), pp = await batch(cls, withPrior), noPp = await batch(cls, without);
        measure(`"a star" base`, base);
        const leakPp = measure(`"a star" trained`, pp);
        const leakNoPp = measure(`"a star" no prior`, noPp);
        const driftPp = priorDrift(base, pp), driftNoPp = priorDrift(base, noPp);
        console.log(
          `"a star" drift from the base: with prior ${driftPp.pixel.toFixed(4)} px, ${
            driftPp.attributes.toFixed(3)
          } attributes; without ${driftNoPp.pixel.toFixed(4)} px, ${
            driftNoPp.attributes.toFixed(3)
          } attributes`,
        );

        assert(
          ctxPp.background >= MARGINS.contextBackground,
          `new contexts: prompt background in ${ctxPp.background}, expected >= ${MARGINS.contextBackground}`,
        );
        assert(
          ctxPp.score >= ctxBase.score + MARGINS.contextFidelityGain &&
            ctxPp.foreground >= ctxBase.foreground + MARGINS.contextForegroundGain,
          `new contexts: fidelity ${ctxPp.score.toFixed(3)} (base ${ctxBase.score.toFixed(3)}), foreground ` +
            `${ctxPp.foreground.toFixed(3)} (base ${ctxBase.foreground.toFixed(3)}); expected gains of at ` +
            `least ${MARGINS.contextFidelityGain} and ${MARGINS.contextForegroundGain}`,
        );
        assert(
          driftPp.pixel <= MARGINS.driftRatio * driftNoPp.pixel,
          `"a star" drift with prior preservation ${driftPp.pixel.toFixed(4)} vs without ` +
            `${driftNoPp.pixel.toFixed(4)}: expected at most ${MARGINS.driftRatio}x`,
        );
        assert(
          leakPp.colour <= leakNoPp.colour - MARGINS.leakReduction &&
            leakPp.histogram <= leakNoPp.histogram - MARGINS.leakHistogramReduction,
          `"a star" in the subject's colour: ${leakPp.colour} with prior preservation, ${leakNoPp.colour} ` +
            `without (histogram ${leakPp.histogram.toFixed(3)} vs ${
              leakNoPp.histogram.toFixed(3)
            }); expected ` +
            `at least ${MARGINS.leakReduction} (${MARGINS.leakHistogramReduction}) less`,
        );
      } finally {
        await pipe.release();
      }
    } finally {
      runner.terminate();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
