/**
 * DreamBooth's measured effect on the pretrained tiny ShapesWorld model (it fails while `models/tiny-shapes`
 * has no `PRETRAINED` marker; `DREAMBOOTH_EFFECT_MODEL=<folder>` runs it on another pretrained folder). LoRA
 * DreamBooth on five images of a blue striped star, each on another background and captioned like the world's
 * own captions ("a sks star, gray background": this model always saw the background named), with and without
 * prior preservation, at each training seed of `SEEDS` (two in CI; the class images are generated once and
 * shared), then, with the same evaluation seeds:
 *
 * 1. The subject in new contexts: "a sks star, orange background", "a sks star on the left, black
 *    background", ... (backgrounds, positions and sizes no training image had): the prompt's background is
 *    kept, and the foreground's colours are clearly closer to the subject's than the base model's are.
 * 2. Prior preservation (the paper's ablation): "a star" images (seeds unlike the class images') drift less
 *    from the base model's with the prior loss than without it, and the subject's colour takes over far less
 *    of them (the language drift the prior loss exists to prevent).
 *
 * Why the measures are these (eighth session): the test used the analyzer's categorical calls (the object's
 * colour, shape and texture) and failed at training seeds 1 and 2 while the method worked. At seed 1, without
 * prior preservation, "a star" became a dark blue star on a blue background in 16 of 16 images: the analyzer
 * then calls the background blue and finds no object of the subject's colour, so the worst leak scored 0
 * (with prior 0.5). At seed 2 the new-context score fell to 0.141 vs the base's 0.119 because its shape and
 * texture calls, which are noise on this model's blurry 64x64 stars (shape agreement is about 0 for every
 * model), dropped, while the subject's colours were there (foreground similarity 0.185 vs 0.040). The
 * share of the frame in the subject's palette colour was tried next and is no better: the tiny model's blurry
 * blue maps to other palette names, and the base model paints some backgrounds blue (base 0.225, seed 0 without
 * prior 0.026). The assertions use the foreground colour histogram (every non-background pixel), which needs no
 * object separated and no colour named, and agrees with the images at every seed; the categorical scores are
 * printed only.
 *
 * CI-sized: per seed two 1600-step runs and 48 evaluation images; 100 class images of 20 sampling steps once
 * (about 4 minutes on two idle cores). `DB_SEEDS=0,1,2,3` re-measures at other seeds; every figure is
 * printed, and the margins below say what they were set from.
 */
import { assert, seedsFromEnv } from "../testing.ts";
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
 * Margins asserted at every seed; each is set below the worst of training seeds 0-3 measured in the eighth
 * session (printed by `DB_SEEDS=0,1,2,3 deno test -A gpu-worker/methods/dreambooth_effect_test.ts`), and away
 * from its no-effect value (0 for the gains, 1 for the ratio). Measured at seeds 0 / 1 / 2 / 3: new-context
 * background as asked 1 / 1 / 1 / 1; new-context foreground similarity 0.154 / 0.264 / 0.185 / 0.287 (base
 * 0.040: gains 0.114 to 0.247); "a star" foreground similarity with prior 0.087 / 0.333 / 0.087 / 0.178,
 * without 0.423 / 0.532 / 0.486 / 0.562 (base 0.149: reductions 0.199 to 0.399); "a star" pixel drift ratio
 * 0.806 / 0.555 / 0.808 / 0.795. The drift ratio's margin is the tightest: prior preservation takes about a
 * fifth off the drift at three of the four seeds, and 0.9 is halfway between the worst measured and none.
 */
const MARGINS = {
  /** Share of new-context images whose background is the prompt's (the subject does not override it). */
  contextBackground: 0.75,
  /** New-context foreground colour-histogram similarity to the subject, trained minus base. */
  contextForegroundGain: 0.07,
  /** Pixel drift of "a star" from the base with prior preservation, relative to without. */
  driftRatio: 0.9,
  /** "a star" foreground colour-histogram similarity to the subject, without prior preservation minus with. */
  leakReduction: 0.1,
};

const CONFIG: DreamBoothConfigInput = {
  class_word: "star",
  steps: 1600,
  learning_rate: 2e-3,
  num_class_images: 100,
  class_sampling_steps: 20,
  class_guidance_scale: 5,
};
/** Training seeds, each asserted; `DB_SEEDS` (comma-separated) sets others to re-measure the margins. */
const SEEDS = seedsFromEnv("DB_SEEDS", [0, 1]);
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
  name: `DreamBooth at training seeds ${SEEDS.join(", ")}: the subject in new contexts; prior preservation ` +
    `keeps "a star" near the base`,
  fn: async () => {
    // A missing model is a failure, not a skip: a suite that skips its effect tests shows nothing.
    if (!ready) throw new Error(MISSING);
    const dir = await Deno.makeTempDir({ prefix: "dreambooth_effect_" });
    const runner = new EngineRunner();
    try {
      const images = subjectImages();
      const train = async (name: string, seed: number, prior: boolean) => {
        const t0 = performance.now();
        const r = await dreamBooth(runner, {
          model: MODEL,
          images,
          out: `${dir}/${name}`,
          cacheDir: `${dir}/cache`,
          config: { ...CONFIG, seed, with_prior_preservation: prior },
        });
        console.log(
          `${name}: eval loss ${r.evalLoss.before.toFixed(4)} -> ${r.evalLoss.after.toFixed(4)}, ` +
            `${((performance.now() - t0) / 1000).toFixed(0)} s, class images ${r.classImages.generated} ` +
            `generated, ${r.classImages.reused} reused`,
        );
        return loadDreamBoothLora(await Deno.readFile(`${dir}/${name}/${LORA_FILE_NAME}`), name).lora;
      };

      const pipe = await StableDiffusionPipeline.load(MODEL, runner, { cacheDir: `${dir}/onnx` });
      try {
        type Lora = Awaited<ReturnType<typeof train>>;
        const batch = async (prompts: string[], lora?: Lora) => {
          const out: RgbImage[] = [];
          for (const [i, prompt] of prompts.entries()) {
            out.push(
              (await pipe.generate({
                prompt,
                seed: EVAL_SEED + i,
                steps: SAMPLING.steps,
                guidanceScale: SAMPLING.guidanceScale,
                adapters: lora ? [{ lora, scale: 1 }] : [],
              })).images[0],
            );
          }
          return out;
        };
        const profile = subjectProfile(images.map((i) => i.image));
        /** Every measure of one set of images; `background` names the prompt's background per image. */
        const measure = (label: string, imgs: RgbImage[], background?: (i: number) => ColourName) => {
          const f = shapesWorldFidelity(imgs, profile);
          const foreground = foregroundSimilarity(imgs, profile);
          const kept = background
            ? imgs.filter((img, i) => analyzeImage(img).background === background(i)).length / imgs.length
            : NaN;
          console.log(
            `${label.padEnd(30)} foreground ${foreground.toFixed(3)}${
              background ? `, background as asked ${kept}` : ""
            }; analyzer score ${f.score.toFixed(3)} ` +
              `(shape ${f.shape}, colour ${f.colour}, texture ${f.texture}, histogram ${
                f.histogram.toFixed(3)
              })`,
          );
          return { foreground, background: kept };
        };

        const ctx = CONTEXTS.flatMap((c) => Array(PER_CONTEXT).fill(c.prompt));
        const ctxBackground = (i: number) => CONTEXTS[Math.floor(i / PER_CONTEXT)].background;
        const cls = Array(4 * PER_CONTEXT).fill("a star");
        const ctxBase = measure("new contexts, base", await batch(ctx), ctxBackground);
        const baseStars = await batch(cls);
        measure(`"a star", base`, baseStars);

        const failures: string[] = [];
        const check = (ok: boolean, what: string) => {
          if (!ok) failures.push(what);
        };
        for (const seed of SEEDS) {
          const withPrior = await train(`prior-${seed}`, seed, true);
          const without = await train(`no-prior-${seed}`, seed, false);
          // 1. The subject in new contexts.
          const ctxPp = measure(`new contexts, seed ${seed}`, await batch(ctx, withPrior), ctxBackground);
          // 2. Prior preservation: "a star" with the same seeds, base vs each trained model.
          const pp = await batch(cls, withPrior), noPp = await batch(cls, without);
          const leakPp = measure(`"a star", prior, seed ${seed}`, pp);
          const leakNoPp = measure(`"a star", no prior, seed ${seed}`, noPp);
          const driftPp = priorDrift(baseStars, pp).pixel, driftNoPp = priorDrift(baseStars, noPp).pixel;
          console.log(
            `seed ${seed}: "a star" pixel drift from the base with prior ${driftPp.toFixed(4)}, without ` +
              `${driftNoPp.toFixed(4)} (ratio ${(driftPp / driftNoPp).toFixed(3)})`,
          );
          check(
            ctxPp.background >= MARGINS.contextBackground,
            `seed ${seed}, new contexts: prompt background in ${ctxPp.background}, expected >= ` +
              `${MARGINS.contextBackground}`,
          );
          check(
            ctxPp.foreground >= ctxBase.foreground + MARGINS.contextForegroundGain,
            `seed ${seed}, new contexts: foreground similarity ${
              ctxPp.foreground.toFixed(3)
            } vs the base's ` +
              `${
                ctxBase.foreground.toFixed(3)
              }; expected a gain of at least ${MARGINS.contextForegroundGain}`,
          );
          check(
            driftNoPp > 0 && driftPp <= MARGINS.driftRatio * driftNoPp, // no drift at all shows nothing
            `seed ${seed}, "a star" drift with prior preservation ${driftPp.toFixed(4)} vs without ` +
              `${driftNoPp.toFixed(4)}: expected at most ${MARGINS.driftRatio}x`,
          );
          check(
            leakPp.foreground <= leakNoPp.foreground - MARGINS.leakReduction,
            `seed ${seed}, "a star" foreground similarity to the subject: ${
              leakPp.foreground.toFixed(3)
            } with ` +
              `prior preservation, ${leakNoPp.foreground.toFixed(3)} without; expected at least ` +
              `${MARGINS.leakReduction} less`,
          );
        }
        assert(failures.length === 0, failures.join("\n"));
      } finally {
        await pipe.release();
      }
    } finally {
      runner.terminate();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
