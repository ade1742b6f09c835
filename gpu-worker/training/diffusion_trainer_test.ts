import { assert, assertClose, assertEquals, assertRejects } from "../testing.ts";
import { EngineRunner } from "../ort/runner.ts";
import { loadModelFolder } from "../models/model_folder.ts";
import { EXTRA_TOKENS_INPUT } from "../models/clip_text_model.ts";
import { DiffusionTrainer, type TargetFn, type TrainingExample } from "./diffusion_trainer.ts";
import { Rng } from "../random.ts";
import { loraTargets } from "../models/lora_targets.ts";
import { createScheduler } from "../schedulers/scheduler.ts";
import type { LoraWeights } from "../pipelines/stable_diffusion.ts";
import { AdamW } from "./optimizer.ts";
import { FrozenUNet } from "./frozen_unet.ts";
import { orthogonalityLoss } from "./orthogonality_loss.ts";
import { sharedSubspaceLoss } from "./shared_subspace_loss.ts";

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
    const lora = { targets: [/attn2\.to_k$/], rank: 2, alpha: 2 };
    const trainer = await DiffusionTrainer.create(runner, folder, { batch: 2, lora });
    const single = await DiffusionTrainer.create(runner, folder, { batch: 1, lora });
    const n = folder.unetConfig.in_channels * folder.unetConfig.sample_size ** 2;
    const hw = folder.unetConfig.sample_size ** 2;
    // x_t, timestep and target given, so no draw of the rng decides what a sample's loss is
    const [a, b] = ["a red circle", "a blue star"].map((caption, i) => ({
      caption,
      noisy: new Rng(60 + i).normal(n),
      timestep: 300 + 400 * i,
      target: new Rng(70 + i).normal(n),
    }));
    // The first sample's loss alone (a batch of 1), against which a batch of 2 is the mean over the batch.
    const alone = await single.computeGradients([a], new Rng(5));
    assert(Object.keys(alone.grads).length > 0 && alone.loss > 0, "something trained");
    const close = (x: number, y: number) => Math.abs(x - y) <= 1e-6 * Math.max(Math.abs(y), 1e-12);
    const weighted = await trainer.computeGradients([a, { ...b, weight: 0 }], new Rng(5));
    const masked = await trainer.computeGradients([a, { ...b, mask: new Float32Array(hw) }], new Rng(5));
    for (const [what, run] of [["weight 0", weighted], ["empty mask", masked]] as const) {
      // the second sample adds nothing: loss = (loss of a) / 2, and so is the gradient
      assert(
        close(run.loss, alone.loss / 2),
        `${what}: loss ${run.loss}, half the first sample's ${alone.loss / 2}`,
      );
      for (const [name, g] of Object.entries(alone.grads)) {
        assertClose(run.grads[name], g.map((v) => v / 2), 1e-4, `${what}: ${name}`);
      }
    }
    const full = await trainer.computeGradients([a, b], new Rng(5));
    assert(full.loss > weighted.loss + 1e-3, `${full.loss} vs ${weighted.loss}`);
    await trainer.release();
    await single.release();
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

const CONV_SLOT = /(resnets\.\d+\.(conv1|conv2|conv_shortcut)|samplers\.0\.conv)\.(down|up)$/;

Deno.test("conv LoRA (c3lier): factors fed flat with the conv fan-in, finite non-zero gradients, the loss goes down", async () => {
  await withRunner(async (runner) => {
    const folder = await loadModelFolder(TINY);
    const trainer = await DiffusionTrainer.create(runner, folder, {
      batch: 1,
      lora: { targets: loraTargets("c3lier"), rank: 2, alpha: 2 },
    });
    const conv = trainer.trained.filter((t) => CONV_SLOT.test(t.name));
    assert(conv.length >= 8, `conv slots: ${conv.length}`);
    const conv1 = trainer.trained.find((t) => t.name === "lora.down_blocks.0.resnets.0.conv1.down")!;
    // 32 input channels x 3 x 3, kaiming bound 1 / sqrt(288).
    assertEquals(conv1.shape, [2, 32 * 9]);
    assert(conv1.data.every((x) => Math.abs(x) <= 1 / Math.sqrt(288)) && conv1.data.some((x) => x !== 0));
    const n = folder.unetConfig.in_channels * folder.unetConfig.sample_size ** 2;
    const ex = examples(n, ["a red circle"]);
    const opt = new AdamW(trainer.params(), { lr: 1e-2, weightDecay: 0 });
    const losses: number[] = [];
    for (let step = 0; step < 4; step++) {
      const r = await trainer.computeGradients(ex, new Rng(7));
      losses.push(r.loss);
      for (const t of conv) {
        const g = r.grads[t.name];
        assert(g.every(Number.isFinite), `${t.name}: non-finite gradient`);
        // Up starts at zero, so down's gradient is zero until the first step moved up.
        if (t.name.endsWith(".up") || step > 0) {
          assert(g.some((x) => x !== 0), `${t.name}: zero gradient at ${step}`);
        }
      }
      opt.step(r.grads);
    }
    assert(losses[3] < losses[0], `losses ${losses}`);
    await trainer.release();
  });
});

/** The trainer's own prediction by the frozen model: the same prompts, the LoRA at `scale` (0: off). */
function frozenTarget(frozen: FrozenUNet, lora: LoraWeights, scale: number): TargetFn {
  return async ({ noisy, timesteps, examples }) =>
    frozen.predict(
      noisy,
      timesteps,
      await frozen.encodePrompts(examples.map((e) => e.caption)),
      scale ? [{ lora, scale }] : [],
    );
}

/** Concept Sliders' text target: eps(neutral) + eta (eps(c+) - eps(c-)) by the frozen model, slider off. */
function sliderTarget(frozen: FrozenUNet, eta: number): TargetFn {
  return async ({ noisy, timesteps }) => {
    const [neutral, pos, neg] = await Promise.all(
      ["a circle", "a red circle", "a blue circle"].map(async (p) =>
        frozen.predict(noisy, timesteps, await frozen.encodePrompts([p]))
      ),
    );
    return neutral.map((x, i) => x + eta * (pos[i] - neg[i]));
  };
}

const maxAbs = (xs: Iterable<Float32Array>) =>
  Math.max(...[...xs].map((g) => g.reduce((m, x) => Math.max(m, Math.abs(x)), 0)));

Deno.test("target hook: the frozen model's own prediction gives zero loss and gradients; a slider target trains; x_t from a partial denoising run", async () => {
  await withRunner(async (runner) => {
    const folder = await loadModelFolder(TINY);
    const targets = loraTargets("c3lier");
    const trainer = await DiffusionTrainer.create(runner, folder, {
      batch: 2,
      lora: { targets, rank: 2, alpha: 1 },
    });
    const frozen = await FrozenUNet.create(runner, folder, { loraTargets: targets });
    const lora = trainer.loraWeights("slider");
    const n = folder.unetConfig.in_channels * folder.unetConfig.sample_size ** 2;
    const ex = examples(n, ["a red circle", "a blue star"]);
    // LoRA at its init (up = 0): the trained model is the frozen one.
    const zero = await trainer.computeGradients(ex, new Rng(3), { target: frozenTarget(frozen, lora, 0) });
    assert(zero.loss < 1e-9, `loss ${zero.loss}`);
    assert(maxAbs(Object.values(zero.grads)) < 1e-5, `gradient ${maxAbs(Object.values(zero.grads))}`);
    const slider = await trainer.computeGradients(ex, new Rng(3), { target: sliderTarget(frozen, 4) });
    assert(slider.loss > 1e-3, `slider loss ${slider.loss}`);
    assert(
      trainer.trained.filter((t) => t.name.endsWith(".up")).every((t) =>
        slider.grads[t.name].some((x) => x !== 0)
      ),
    );

    // With non-zero factors the frozen model with the adapter at +1 (at -1) is the trained one at loraScale +1
    // (-1): the factors reach the evaluator live, conv slots included.
    const rng = new Rng(11);
    for (const t of trainer.trained) if (t.name.endsWith(".up")) t.data.set(rng.normal(t.data.length, 0.05));
    const plus = await trainer.computeGradients(ex, new Rng(3), { target: frozenTarget(frozen, lora, 1) });
    const minus = await trainer.computeGradients(ex, new Rng(3), {
      target: frozenTarget(frozen, lora, -1),
      loraScale: -1,
    });
    const crossed = await trainer.computeGradients(ex, new Rng(3), {
      target: frozenTarget(frozen, lora, -1),
    });
    assert(plus.loss < 1e-9 && minus.loss < 1e-9, `losses ${plus.loss} ${minus.loss}`);
    assert(crossed.loss > 1e-4, `crossed ${crossed.loss}`);

    // A slider step: x_t from 3 of 10 DDIM steps with the slider on (CFG 3), then the slider target there.
    const scheduler = createScheduler(folder.schedulerConfig);
    scheduler.setTimesteps(10);
    const start = new Rng(5).normal(2 * n).map((x) => x * scheduler.initNoiseSigma);
    const { latents, timestep } = await frozen.denoise({
      latents: start,
      scheduler,
      steps: 3,
      cond: await frozen.encodePrompts(["a red circle"]),
      uncond: await frozen.encodePrompts([""]),
      guidance: 3,
      adapters: [{ lora, scale: 1 }],
    });
    assertEquals(timestep, scheduler.timesteps[3]);
    const noisy: TrainingExample[] = [0, 1].map((b) => ({
      noisy: latents.slice(b * n, (b + 1) * n),
      timestep,
      caption: "a red circle",
    }));
    const a = await trainer.computeGradients(noisy, new Rng(1), { target: sliderTarget(frozen, 4) });
    const b = await trainer.computeGradients(noisy, new Rng(2), { target: sliderTarget(frozen, 4) });
    assert(Number.isFinite(a.loss) && a.loss > 0);
    // Noisy examples draw nothing from the rng: the same bytes whatever the seed.
    assertEquals(a.loss, b.loss);
    assertEquals([...a.grads[trainer.trained[1].name]], [...b.grads[trainer.trained[1].name]]);
    // An example's own target wins over the callback.
    const own = await trainer.computeGradients(
      noisy.map((e) => ({ ...e, target: new Float32Array(n) })),
      new Rng(1),
      { target: () => Promise.reject(new Error("the callback is not called")) },
    );
    assert(Number.isFinite(own.loss) && own.loss > 0);
    await assertRejects(() => trainer.computeGradients(noisy, new Rng(1)), RangeError, "needs a target");
    await assertRejects(
      () =>
        trainer.computeGradients([{ ...noisy[0], timestep: 1000 }, noisy[1]], new Rng(1), {
          target: sliderTarget(frozen, 4),
        }),
      RangeError,
      "integer timestep in 0..999",
    );
    await frozen.release();
    await trainer.release();
  });
});

Deno.test("auxiliary terms: CIDM's orthogonality and shared-subspace terms add their weighted values and train H, W*", async () => {
  await withRunner(async (runner) => {
    const folder = await loadModelFolder(TINY);
    const lora = { targets: [/attn2\.to_[kv]$/], rank: 2, alpha: 2 };
    const plain = await DiffusionTrainer.create(runner, folder, { batch: 1, lora });
    // A previous task: random factors on the same layers.
    const rng = new Rng(8);
    const previous: LoraWeights = {
      name: "task1",
      alpha: 2,
      modules: new Map(
        plain.loraWeights().modules.entries().map(([path, w]) => [path, {
          rank: 2,
          down: rng.normal(w.down.length, 0.1),
          up: rng.normal(w.up.length, 0.1),
        }]),
      ),
    };
    const state = new Map<string, Float32Array>();
    const trainer = await DiffusionTrainer.create(runner, folder, {
      batch: 1,
      lora,
      auxLosses: [
        orthogonalityLoss({ previous: [previous] }),
        sharedSubspaceLoss({ previous: [previous], weight: 0.5, state }),
      ],
    });
    const aux = trainer.trained.filter((t) => t.kind === "aux");
    assertEquals(aux.length, state.size);
    assertEquals(aux.length, plain.loraWeights().modules.size * 3, "per layer: W* and two projections");
    // The same non-zero up factors in both (up starts at zero, where the orthogonality term is flat).
    const ups = new Rng(9);
    for (const t of plain.trained) {
      if (!t.name.endsWith(".up")) continue;
      const v = ups.normal(t.data.length, 0.05);
      t.data.set(v);
      trainer.trained.find((x) => x.name === t.name)!.data.set(v);
    }
    const n = folder.unetConfig.in_channels * folder.unetConfig.sample_size ** 2;
    const ex = examples(n, ["a red circle"]);
    const base = await plain.computeGradients(ex, new Rng(4));
    const r = await trainer.computeGradients(ex, new Rng(4));
    const { "cidm.orthogonality": ortho, "cidm.shared": shared } = r.auxLosses;
    assert(ortho > 0 && shared > 0, JSON.stringify(r.auxLosses));
    const expected = base.loss + 0.1 * ortho + 0.5 * shared;
    assert(Math.abs(r.loss - expected) < 1e-5 * expected, `${r.loss} vs ${expected}`);
    // H starts at zero, so W*'s gradient (through H) is zero at first; H's is not.
    for (const t of aux) {
      const moves = r.grads[t.name].some((x) => x !== 0);
      assert(
        t.name.endsWith(".subspace") ? !moves : moves,
        `${t.name}: gradient ${moves ? "non-zero" : "zero"}`,
      );
    }
    const up = plain.trained.find((t) => t.name.endsWith(".up"))!.name;
    assert(r.grads[up].some((x, i) => Math.abs(x - base.grads[up][i]) > 1e-7), "the terms reach the factors");
    await plain.release();
    await trainer.release();
  });
});
