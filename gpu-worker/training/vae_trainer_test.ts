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

Deno.test("VaeTrainer pixelWeights: a weighted mean over pixels of both reconstruction terms", async () => {
  await withRunner(async (runner) => {
    const rng = new Rng(5);
    const lh = SIZE / F, per = 3 * SIZE * SIZE, lper = 4 * lh * lh;
    const x = rng.normal(2 * per, 0.5), z = rng.normal(2 * lper);
    const opts = { batch: BATCH, size: SIZE, decoderOnly: true, l1Weight: 0.7 };
    const plain = await VaeTrainer.create(runner, CFG, WeightSource.random(3), opts);
    const weighted = await VaeTrainer.create(runner, CFG, WeightSource.random(3), {
      ...opts,
      pixelWeights: true,
    });
    const images = Tensor.f32([BATCH, 3, SIZE, SIZE], x), latents = Tensor.f32([BATCH, 4, lh, lh], z);
    const w = (f: (n: number, p: number) => number) =>
      Tensor.f32(
        [BATCH, 1, SIZE, SIZE],
        Float32Array.from({ length: BATCH * SIZE * SIZE }, (_, i) => f(Math.floor(i / (SIZE * SIZE)), i)),
      );

    // Uniform weights (of any size) are the plain mean.
    const a = await plain.computeGradients(images, rng, latents);
    const b = await weighted.computeGradients(images, rng, latents, w(() => 3));
    assert(Math.abs(a.loss - b.loss) <= 1e-5 * a.loss, `uniform weights: ${b.loss} vs ${a.loss}`);
    const name = plain.trained[0].name;
    assert(a.grads[name].every((v, i) => Math.abs(v - b.grads[name][i]) <= 1e-4 * (Math.abs(v) + 1e-6)));

    // Weight 1 on the first image and 0 on the second: the loss of the first image alone (a batch of it twice).
    const first = await weighted.computeGradients(images, rng, latents, w((n) => n === 0 ? 1 : 0));
    const twice = await plain.computeGradients(
      Tensor.f32([BATCH, 3, SIZE, SIZE], Float32Array.from([...x.subarray(0, per), ...x.subarray(0, per)])),
      rng,
      Tensor.f32([BATCH, 4, lh, lh], Float32Array.from([...z.subarray(0, lper), ...z.subarray(0, lper)])),
    );
    assert(Math.abs(first.loss - twice.loss) <= 1e-5 * twice.loss, `${first.loss} vs ${twice.loss}`);
    assert(
      Math.abs(first.loss - a.loss) > 1e-3 * a.loss,
      "the two images' losses differ, so the check can fail",
    );

    // Wrong or missing weights are refused with what was expected.
    await assertRejects(() => weighted.computeGradients(images, rng, latents), RangeError, "got none");
    await assertRejects(
      () => weighted.computeGradients(images, rng, latents, w(() => 0)),
      RangeError,
      "not all zero",
    );
    await assertRejects(
      () => weighted.computeGradients(images, rng, latents, w(() => -1)),
      RangeError,
      "non-negative",
    );
    await assertRejects(
      () => plain.computeGradients(images, rng, latents, w(() => 1)),
      TypeError,
      "without pixelWeights",
    );
    await Promise.all([plain.release(), weighted.release()]);
  });
});
