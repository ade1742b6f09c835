import { assert, assertEquals, assertRejects } from "../testing.ts";
import { EngineRunner } from "../ort/runner.ts";
import { loadModelFolder } from "../models/model_folder.ts";
import { EXTRA_TOKENS_INPUT } from "../models/clip_text_model.ts";
import { DiffusionTrainer, type TrainingExample } from "./diffusion_trainer.ts";
import { Rng } from "../random.ts";

const TINY = new URL("../../models/tiny-shapes", import.meta.url).pathname;

async function withRunner(fn: (r: EngineRunner) => Promise<void>) {
  const runner = new EngineRunner();
  try {
    await fn(runner);
  } finally {
    runner.terminate();
  }
}

function examples(n: number, captions: string[]): TrainingExample[] {
  return captions.map((caption, i) => ({ latent: new Rng(50 + i).normal(n, 0.8), caption }));
}

const dot = (a: Float32Array, b: Float32Array) => a.reduce((s, x, i) => s + x * b[i], 0);

Deno.test("new token rows train alone: the gradient reaches them through the text encoder and matches finite differences", async () => {
  await withRunner(async (runner) => {
    const folder = await loadModelFolder(TINY);
    const [id] = folder.tokenizer.addTokens(["<new1>"]);
    assertEquals(id, folder.textConfig.vocab_size);
    const trainer = await DiffusionTrainer.create(runner, folder, {
      batch: 2,
      textEncoder: { extraTokens: 1 },
    });
    assertEquals(trainer.trained.map((t) => t.name), [EXTRA_TOKENS_INPUT]);
    const row = trainer.trained[0].data;
    row.set(new Rng(3).normal(row.length, 0.5));
    const n = folder.unetConfig.in_channels * folder.unetConfig.sample_size ** 2;
    const ex = examples(n, ["a <new1> circle, blue background", "a red square"]);
    const g = (await trainer.computeGradients(ex, new Rng(9))).grads[EXTRA_TOKENS_INPUT];
    assert(g.some((v) => v !== 0), "the new row gets a gradient");
    // Directional derivative with the same noise and timesteps (same rng seed).
    const v = new Rng(4).normal(row.length);
    const base = Float32Array.from(row);
    const h = 1e-2;
    row.set(base.map((x, i) => x + h * v[i]));
    const up = (await trainer.computeGradients(ex, new Rng(9))).loss;
    row.set(base.map((x, i) => x - h * v[i]));
    const down = (await trainer.computeGradients(ex, new Rng(9))).loss;
    row.set(base);
    const numeric = (up - down) / (2 * h), analytic = dot(g, v);
    assert(
      Math.abs(numeric - analytic) <= 0.02 * Math.abs(analytic) + 1e-4,
      `numeric ${numeric} vs analytic ${analytic}`,
    );
    // A batch that never uses the token leaves its row untouched.
    const none = await trainer.computeGradients(examples(n, ["a red square", "a blue star"]), new Rng(9));
    assert(none.grads[EXTRA_TOKENS_INPUT].every((x) => x === 0));
    await trainer.release();
  });
});

Deno.test("trainable selection by name: cross-attention K/V only; bad batches are refused", async () => {
  await withRunner(async (runner) => {
    const folder = await loadModelFolder(TINY);
    const trainer = await DiffusionTrainer.create(runner, folder, {
      batch: 1,
      unetTrainable: (name) => /attn2\.to_[kv]\.weight$/.test(name),
    });
    assert(
      trainer.trained.length > 0 && trainer.trained.every((t) => /attn2\.to_[kv]\.weight$/.test(t.name)),
    );
    const n = folder.unetConfig.in_channels * folder.unetConfig.sample_size ** 2;
    const r = await trainer.computeGradients(examples(n, ["a red circle"]), new Rng(1));
    assert(Number.isFinite(r.loss) && Object.values(r.grads).every((gr) => gr.some((x) => x !== 0)));
    await assertRejects(
      () => trainer.computeGradients(examples(n, ["a", "b"]), new Rng(1)),
      RangeError,
      "expected 1 examples",
    );
    await assertRejects(
      () => trainer.computeGradients([{ latent: new Float32Array(3), caption: "x" }], new Rng(1)),
      RangeError,
      "latent has 3 values",
    );
    await trainer.release();
    await assertRejects(
      () => DiffusionTrainer.create(runner, folder, { batch: 1 }),
      RangeError,
      "nothing to train",
    );
  });
});

Deno.test("per-sample weights and masks: a zero weight or an empty mask removes a sample from the loss", async () => {
  await withRunner(async (runner) => {
    const folder = await loadModelFolder(TINY);
    const trainer = await DiffusionTrainer.create(runner, folder, {
      batch: 2,
      lora: { targets: [/attn2\.to_k$/], rank: 2, alpha: 2 },
    });
    const n = folder.unetConfig.in_channels * folder.unetConfig.sample_size ** 2;
    const hw = folder.unetConfig.sample_size ** 2;
    const [a, b] = examples(n, ["a red circle", "a blue star"]);
    const both = await trainer.computeGradients([a, { ...b, weight: 0 }], new Rng(5));
    const masked = await trainer.computeGradients([a, { ...b, mask: new Float32Array(hw) }], new Rng(5));
    // With weight 0 the second sample adds nothing: loss = (loss of a) / 2 both ways.
    assert(
      Math.abs(both.loss - masked.loss) < 1e-6 * Math.max(1, both.loss),
      `${both.loss} vs ${masked.loss}`,
    );
    const full = await trainer.computeGradients([a, b], new Rng(5));
    assert(full.loss > both.loss);
    await trainer.release();
  });
});

Deno.test("text probes: cross-entropy over labelled positions, gradients match finite differences, labels checked", async () => {
  await withRunner(async (runner) => {
    const folder = await loadModelFolder(TINY);
    const L = Math.min(folder.tokenizer.modelMaxLength, folder.textConfig.max_position_embeddings);
    const trainer = await DiffusionTrainer.create(runner, folder, {
      batch: 2,
      textEncoder: { trainable: (n) => n === "final_layer_norm.weight" },
      textProbes: [{ name: "colour", classes: 12, weight: 0.5 }],
    });
    assertEquals(trainer.trained.map((t) => t.name), [
      "final_layer_norm.weight",
      "probe.colour.weight",
      "probe.colour.bias",
    ]);
    const n = folder.unetConfig.in_channels * folder.unetConfig.sample_size ** 2;
    const labels = new Int32Array(L).fill(-1);
    labels.fill(3, 4);
    const ex = examples(n, ["a large red circle, blue background", "a blue star"]);
    ex[0].probeLabels = { colour: labels };
    // With near-zero probe weights the softmax is near uniform: mean cross-entropy about ln 12.
    const r = await trainer.computeGradients(ex, new Rng(9));
    assert(Math.abs(r.probeLosses.colour - Math.log(12)) < 0.05, `probe loss ${r.probeLosses.colour}`);
    const unlabelled = await trainer.computeGradients(
      examples(n, ["a red circle", "a blue star"]),
      new Rng(9),
    );
    assertEquals(unlabelled.probeLosses.colour, 0);
    assert(unlabelled.grads["probe.colour.weight"].every((x) => x === 0), "no labels, no probe gradient");
    assert(r.loss > unlabelled.loss, "the probe term adds to the loss");
    // Directional derivatives through the probe and through the encoder (same noise: same rng seed).
    for (const name of ["probe.colour.weight", "final_layer_norm.weight"]) {
      const t = trainer.trained.find((x) => x.name === name)!;
      const v = new Rng(4).normal(t.data.length);
      const base = Float32Array.from(t.data);
      const h = 1e-2;
      t.data.set(base.map((x, i) => x + h * v[i]));
      const up = (await trainer.computeGradients(ex, new Rng(9))).loss;
      t.data.set(base.map((x, i) => x - h * v[i]));
      const down = (await trainer.computeGradients(ex, new Rng(9))).loss;
      t.data.set(base);
      const numeric = (up - down) / (2 * h), analytic = dot(r.grads[name], v);
      assert(
        Math.abs(numeric - analytic) <= 0.02 * Math.abs(analytic) + 1e-4,
        `${name}: numeric ${numeric} vs analytic ${analytic}`,
      );
    }
    ex[0].probeLabels = { colour: new Int32Array(L).fill(12) };
    await assertRejects(() => trainer.computeGradients(ex, new Rng(9)), RangeError, "outside 0..11");
    ex[0].probeLabels = { colour: new Int32Array(3) };
    await assertRejects(() => trainer.computeGradients(ex, new Rng(9)), RangeError, `expected ${L}`);
    await trainer.release();
  });
});
