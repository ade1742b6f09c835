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
    const { adapter, stats } = await mergeCustomDiffusion(pipe, [a, b], { captions });
    assertEquals(adapter.tokens.map((t) => t.token), ["<new1>", "<new2>"]);
    assertEquals([stats.concepts, stats.layers, stats.targetRows], [2, a.layers.size, 8]);
    const avg = await averageCustomDiffusion(pipe, [a, b]);
    for (const c of [a, b]) {
      const f = await targetFeatures(
        pipe,
        targetPrompts(c.tokens[0].token, String(c.info.class_words)),
        c.tokens,
      );
      let worstMerged = 0, worstAvg = 0, scale = 0;
      for (const [path, l] of c.layers) {
        if (l.kind !== "weight") continue;
        const m = adapter.layers.get(path)!, v = avg.layers.get(path)!;
        if (m.kind !== "weight" || v.kind !== "weight") throw new Error("full weights expected");
        for (let r = 0; r < f.rows; r++) {
          for (let o = 0; o < l.out; o++) {
            let own = 0, merged = 0, averaged = 0;
            for (let i = 0; i < l.in; i++) {
              const x = f.data[r * f.dim + i];
              own += l.weight[o * l.in + i] * x;
              merged += m.weight[o * l.in + i] * x;
              averaged += v.weight[o * l.in + i] * x;
            }
            scale = Math.max(scale, Math.abs(own));
            worstMerged = Math.max(worstMerged, Math.abs(merged - own));
            worstAvg = Math.max(worstAvg, Math.abs(averaged - own));
          }
        }
      }
      // float32 weights and features: exact up to float32 rounding of the products.
      assert(
        worstMerged < 1e-3 * scale,
        `merged vs own on ${c.name}'s targets: ${worstMerged} (scale ${scale})`,
      );
      assert(worstAvg > 100 * worstMerged, `the average does not keep them: ${worstAvg} vs ${worstMerged}`);
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
