/**
 * Merging Custom Diffusion adapters on the tiny model with its own text encoder: the target rows are the words
 * from the modifier token on, the merged weights map every concept's target features as that concept's own
 * weights do, all tokens are kept, and clashing tokens are refused.
 */
import { assert, assertEquals, assertRejects } from "../testing.ts";
import { EngineRunner } from "../ort/runner.ts";
import { StableDiffusionPipeline } from "../pipelines/stable_diffusion.ts";
import type { CustomDiffusionAdapter, CustomDiffusionLayer } from "../adapters/custom_diffusion.ts";
import {
  averageCustomDiffusion,
  mergeCaptions,
  mergeCustomDiffusion,
  targetFeatures,
  targetPrompts,
} from "./custom_diffusion_compose.ts";
import { trainedLayerPattern } from "./custom_diffusion.ts";
import { Rng } from "../random.ts";

const MODEL = new URL("../../models/tiny-shapes", import.meta.url).pathname;
/** Seeds of the concept pairs the sequence merge is checked on (concepts `seed` and `seed + 100`). */
const SEQUENCE_SEEDS = [1, 3, 5, 7, 9, 11];
/** The sequence merge's misfit over the average's, asserted for every concept (measured figures below). */
const MARGINS = { rms: 0.2, worst: 0.9 };

/** A concept whose K/V weights are the base's plus a seeded random change, with a random token row. */
function fakeConcept(pipe: StableDiffusionPipeline, token: string, classWord: string, seed: number) {
  const unet = pipe.folder.weights.unet;
  const rng = new Rng(seed);
  const layers = new Map<string, CustomDiffusionLayer>();
  for (const n of unet.names().filter((k) => trainedLayerPattern("crossattn_kv").test(k))) {
    const [out, inF] = unet.entry(n).shape;
    const w = unet.float32(n).map((v) => v + 0.05 * rng.gauss());
    layers.set(n.replace(/\.weight$/, ""), { kind: "weight", out, in: inF, weight: w });
  }
  const embedding = rng.normal(pipe.folder.textConfig.hidden_size, 0.02);
  const a: CustomDiffusionAdapter = {
    name: token,
    layers,
    tokens: [{ token, embedding }],
    info: { class_words: [classWord] },
  };
  return a;
}

/**
 * How far merged weights map a concept's target features from where its own weights map them: the worst
 * |W_merged k - W_own k| over the rows k relative to the largest |W_own k| (`worst`), or the root mean square of
 * the differences relative to that of W_own k (`rms`).
 */
function misfit(
  own: CustomDiffusionAdapter,
  merged: CustomDiffusionAdapter,
  f: { data: Float32Array; rows: number; dim: number },
  norm: "worst" | "rms" = "worst",
): number {
  let worst = 0, scale = 0, sumD = 0, sumA = 0;
  for (const [path, l] of own.layers) {
    const m = merged.layers.get(path)!;
    if (l.kind !== "weight" || m.kind !== "weight") throw new Error("full weights expected");
    for (let r = 0; r < f.rows; r++) {
      for (let o = 0; o < l.out; o++) {
        let a = 0, b = 0;
        for (let i = 0; i < l.in; i++) {
          a += l.weight[o * l.in + i] * f.data[r * f.dim + i];
          b += m.weight[o * l.in + i] * f.data[r * f.dim + i];
        }
        scale = Math.max(scale, Math.abs(a));
        worst = Math.max(worst, Math.abs(b - a));
        sumD += (b - a) ** 2;
        sumA += a ** 2;
      }
    }
  }
  return norm === "worst" ? worst / scale : Math.sqrt(sumD / sumA);
}

Deno.test("closed-form merge on the tiny model: each concept's target words map as its own weights map them", async () => {
  const runner = new EngineRunner();
  const dir = await Deno.makeTempDir({ prefix: "compose_test_" });
  try {
    const pipe = await StableDiffusionPipeline.load(MODEL, runner, { cacheDir: dir });
    const a = fakeConcept(pipe, "<new1>", "star", 1), b = fakeConcept(pipe, "<new2>", "heart", 2);
    // "<new1> star" -> 2 rows, "photo of a <new1> star" -> 2 rows (from the modifier on).
    const fa = await targetFeatures(pipe, targetPrompts("<new1>", "star"), a.tokens);
    assertEquals(fa.rows, 4);
    const captions = await mergeCaptions(MODEL, 60);
    assertEquals(captions.length, 60);
    const { adapter, stats } = await mergeCustomDiffusion(pipe, [a, b], { captions, mode: "exact" });
    assertEquals(adapter.tokens.map((t) => t.token), ["<new1>", "<new2>"]);
    // The exact merge constrains the words from the modifier on and EOS: 3 rows per prompt, 2 prompts each.
    assertEquals([stats.concepts, stats.layers, stats.targetRows], [2, a.layers.size, 12]);
    assertEquals(adapter.info.merge, "closed_form");
    const avg = await averageCustomDiffusion(pipe, [a, b]);
    for (const c of [a, b]) {
      const words = await targetFeatures(
        pipe,
        targetPrompts(c.tokens[0].token, String(c.info.class_words)),
        c.tokens,
        { span: "eos" },
      );
      assertEquals(words.rows, 6);
      const exactFit = misfit(c, adapter, words), avgFit = misfit(c, avg, words);
      // float32 weights and features: exact up to float32 rounding of the products.
      assert(exactFit < 1e-3, `exact merge vs ${c.name}'s own weights on its targets: ${exactFit}`);
      assert(avgFit > 100 * exactFit, `the average does not keep them: ${avgFit} vs ${exactFit}`);
    }

    // The sequence merge (the service's default) keeps every position from the modifier on closer to each
    // concept's own mapping than the average does, for every pair of concepts drawn. Measured in the eighth
    // session over these 6 pairs (12 concepts): RMS misfit 0.091-0.122 of the average's, worst-row misfit
    // 0.359-0.775 of the average's worst row (the figure an earlier test asserted on one pair, < 0.75, and
    // that BENCHMARKS.md called "at least 2x closer": it is not, for every draw; the RMS is about 10x). No
    // effect would be 1 for both.
    for (const seed of SEQUENCE_SEEDS) {
      const x = fakeConcept(pipe, "<new1>", "star", seed),
        y = fakeConcept(pipe, "<new2>", "heart", seed + 100);
      const seq = (await mergeCustomDiffusion(pipe, [x, y], { captions })).adapter;
      assertEquals(seq.info.merge, "closed_form_sequence");
      const average = await averageCustomDiffusion(pipe, [x, y]);
      for (const c of [x, y]) {
        const prompts = targetPrompts(c.tokens[0].token, String(c.info.class_words));
        const whole = await targetFeatures(pipe, prompts, c.tokens, { span: "sequence" });
        assertEquals(whole.rows, 2 * 32); // every position of both prompts
        // The rows that depend on the concept: from its modifier on (position 1 of the first prompt, 4 of the
        // second); the ones before it are shared by every concept, so the merge can only compromise on them.
        const D = whole.dim;
        const own = {
          data: Float32Array.from([
            ...whole.data.subarray(1 * D, 32 * D),
            ...whole.data.subarray(36 * D, 64 * D),
          ]),
          rows: 31 + 28,
          dim: D,
        };
        const rms = misfit(c, seq, own, "rms") / misfit(c, average, own, "rms");
        const worst = misfit(c, seq, own) / misfit(c, average, own);
        console.log(
          `sequence merge, pair ${seed}, ${c.name}: misfit / the average's ${rms.toFixed(3)} (RMS), ` +
            `${worst.toFixed(3)} (worst row)`,
        );
        assert(
          rms < MARGINS.rms && worst < MARGINS.worst,
          `sequence merge, pair ${seed}, ${c.name}: misfit ${rms.toFixed(3)} (RMS) and ${worst.toFixed(3)} ` +
            `(worst row) of the average's; expected < ${MARGINS.rms} and < ${MARGINS.worst}`,
        );
      }
    }
    await assertRejects(
      () => mergeCustomDiffusion(pipe, [a, fakeConcept(pipe, "<new1>", "heart", 3)], { captions }),
      RangeError,
      "both use the token <new1>",
    );
    await pipe.release();
  } finally {
    runner.terminate();
    await Deno.remove(dir, { recursive: true });
  }
});
