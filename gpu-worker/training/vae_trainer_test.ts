import { assert, assertEquals, assertRejects } from "../testing.ts";
import { EngineRunner } from "../ort/runner.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { ModelContext } from "../models/layers.ts";
import { WeightSource } from "../models/weights.ts";
import { buildVaeEncoder, parseVaeConfig } from "../models/autoencoder_kl.ts";
import { Rng } from "../random.ts";
import { Tensor } from "../tensor.ts";
import { colourTarget, VaeTrainer } from "./vae_trainer.ts";

// A small VAE (two levels: 16x16 images, 8x8 latents) with random weights.
const CFG = parseVaeConfig({
  block_out_channels: [8, 16],
  down_block_types: ["DownEncoderBlock2D", "DownEncoderBlock2D"],
  up_block_types: ["UpDecoderBlock2D", "UpDecoderBlock2D"],
  latent_channels: 4,
  norm_num_groups: 4,
});
const SIZE = 16, BATCH = 2, F = 2;

async function withRunner(fn: (r: EngineRunner) => Promise<void>) {
  const runner = new EngineRunner();
  try {
    await fn(runner);
  } finally {
    runner.terminate();
  }
}

Deno.test("colourTarget: each channel averaged over f x f patches, times the scale", () => {
  // One 1-channel-per-colour 4x4 image: R counts 0..15, G all 1, B all -1.
  const f = new Float32Array(3 * 16);
  for (let i = 0; i < 16; i++) [f[i], f[16 + i], f[32 + i]] = [i, 1, -1];
  const t = colourTarget(Tensor.f32([1, 3, 4, 4], f), 2, 2);
  assertEquals(t.dims, [1, 3, 2, 2]);
  // R patches: (0+1+4+5)/4 = 2.5, 4.5, 10.5, 12.5; times 2.
  assertEquals([...t.f], [5, 9, 21, 25, 2, 2, 2, 2, -2, -2, -2, -2]);
});

Deno.test("VaeTrainer colourLatent: adds weight x mean((encoder mean[:, 0:3] - target)^2) to the loss", async () => {
  await withRunner(async (runner) => {
    const images = Tensor.f32([BATCH, 3, SIZE, SIZE], new Rng(4).normal(BATCH * 3 * SIZE * SIZE, 0.5));
    const plain = await VaeTrainer.create(runner, CFG, WeightSource.random(7), { batch: BATCH, size: SIZE });
    const tied = await VaeTrainer.create(runner, CFG, WeightSource.random(7), {
      batch: BATCH,
      size: SIZE,
      colourLatent: { weight: 0.3, scale: 2 },
    });
    const a = await plain.computeGradients(images, new Rng(1));
    const b = await tied.computeGradients(images, new Rng(1));
    assertEquals(b.mse, a.mse, "same weights and noise reconstruct the same");

    // The encoder alone, same weights: the term by hand.
    const g = new GraphBuilder("enc");
    buildVaeEncoder(new ModelContext(g, WeightSource.random(7)), CFG, {
      batch: BATCH,
      height: SIZE,
      width: SIZE,
    });
    const enc = await runner.createSession(g.toBytes(), { inputs: g.inputs });
    const { latent_mean } = await enc.run({ image: images }, ["latent_mean"]);
    const target = colourTarget(images, F, 2);
    const lh = SIZE / F;
    let sq = 0;
    for (let n = 0; n < BATCH; n++) {
      for (let c = 0; c < 3; c++) {
        for (let i = 0; i < lh * lh; i++) {
          const d = latent_mean.f[(n * 4 + c) * lh * lh + i] - target.f[(n * 3 + c) * lh * lh + i];
          sq += d * d;
        }
      }
    }
    const term = 0.3 * sq / (BATCH * 3 * lh * lh);
    assert(term > 1e-3, `the term is not negligible at random init (${term})`);
    assert(
      Math.abs(b.loss - a.loss - term) <= 1e-4 * term,
      `loss difference ${b.loss - a.loss}, expected ${term}`,
    );
    // Only the encoder's gradients change; the decoder's do not see the term.
    const dec = plain.trained.find((t) => t.name.startsWith("decoder."))!.name;
    const encName = plain.trained.find((t) => t.name.startsWith("encoder."))!.name;
    assertEquals(b.grads[dec], a.grads[dec]);
    assert(
      b.grads[encName].some((v, i) => Math.abs(v - a.grads[encName][i]) > 1e-7),
      "encoder gradient moves",
    );
    await Promise.all([plain.release(), tied.release(), enc.release()]);
  });
});

Deno.test("VaeTrainer colourLatent: refused for a decoder-only trainer, with why", async () => {
  await withRunner(async (runner) => {
    await assertRejects(
      () =>
        VaeTrainer.create(runner, CFG, WeightSource.random(7), {
          batch: 1,
          size: SIZE,
          decoderOnly: true,
          colourLatent: { weight: 0.1, scale: 2 },
        }),
      RangeError,
      "a decoder-only trainer",
    );
  });
});
