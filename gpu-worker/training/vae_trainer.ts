/**
 * AutoencoderKL training as one ONNX graph (for pretraining the tiny model's VAE): encode, sample the
 * posterior with the reparameterization trick (noise is an input, drawn by the host from the run's rng),
 * decode, and minimize reconstruction MSE + kl_weight * KL(q(z|x) || N(0, I)), with the backward pass appended.
 *
 * @example
 * ```ts
 * const vae = await VaeTrainer.create(runner, cfg, WeightSource.random(1), { batch: 8, size: 64 });
 * const { loss, grads } = await vae.computeGradients(images, rng);
 * ```
 */
import { GraphBuilder } from "../graph/builder.ts";
import { appendBackward } from "../graph/autodiff.ts";
import { ModelContext } from "../models/layers.ts";
import type { WeightSource } from "../models/weights.ts";
import { buildVaeDecoder, buildVaeEncoder, type VaeConfig } from "../models/autoencoder_kl.ts";
import type { EngineRunner, RemoteSession } from "../ort/runner.ts";
import type { Rng } from "../random.ts";
import { Tensor } from "../tensor.ts";

export class VaeTrainer {
  private constructor(
    readonly config: VaeConfig,
    readonly trained: { name: string; shape: number[]; data: Float32Array }[],
    private readonly session: RemoteSession,
    readonly batch: number,
    readonly size: number,
  ) {}

  static async create(
    runner: EngineRunner,
    cfg: VaeConfig,
    weights: WeightSource,
    o: { batch: number; size: number; klWeight?: number },
  ): Promise<VaeTrainer> {
    const g = new GraphBuilder("vae_training");
    const ctx = new ModelContext(g, weights, { trainable: () => true });
    const f = 2 ** (cfg.block_out_channels.length - 1);
    const lh = o.size / f;
    const { mean, logvar } = buildVaeEncoder(ctx, cfg, { batch: o.batch, height: o.size, width: o.size });
    const eps = g.input("eps", "float32", [o.batch, cfg.latent_channels, lh, lh]);
    const std = g.op("Exp", [g.op("Mul", [logvar, g.scalar(0.5)])]);
    const z = g.op("Add", [mean, g.op("Mul", [std, eps])]);
    const recon = buildVaeDecoder(ctx, cfg, { batch: o.batch, height: lh, width: lh, latents: z });
    const image = g.valueOf("image");
    const d = g.op("Sub", [recon, image]);
    const mse = g.op("ReduceMean", [g.op("Mul", [d, d])], { keepdims: 0 });
    const kl = g.op("ReduceMean", [
      g.op("Sub", [
        g.op("Add", [g.op("Mul", [mean, mean]), g.op("Exp", [logvar])]),
        g.op("Add", [logvar, g.scalar(1)]),
      ]),
    ], { keepdims: 0 });
    const loss = g.op("Add", [mse, g.op("Mul", [kl, g.scalar(0.5 * (o.klWeight ?? 1e-4))])]);
    g.output(loss, "loss");
    g.output(mse, "mse");
    const trained = [...ctx.trainables].map(([name, v]) => ({ name, ...v }));
    appendBackward(g, loss, trained.map((t) => g.valueOf(t.name))).forEach((gr, i) =>
      g.output(gr, `grad.${trained[i].name}`)
    );
    const session = await runner.createSession(g.toBytes(), { inputs: g.inputs });
    return new VaeTrainer(cfg, trained, session, o.batch, o.size);
  }

  /** Loss (and reconstruction MSE) and gradients for a batch of images NCHW in [-1, 1]. */
  async computeGradients(
    images: Tensor,
    rng: Rng,
  ): Promise<{ loss: number; mse: number; grads: Record<string, Float32Array> }> {
    const f = 2 ** (this.config.block_out_channels.length - 1);
    const lh = this.size / f;
    const feeds: Record<string, Tensor> = {
      image: images,
      eps: Tensor.f32(
        [this.batch, this.config.latent_channels, lh, lh],
        rng.normal(this.batch * this.config.latent_channels * lh * lh),
      ),
    };
    for (const t of this.trained) feeds[t.name] = Tensor.f32(t.shape, t.data);
    const out = await this.session.run(feeds, ["loss", "mse", ...this.trained.map((t) => `grad.${t.name}`)]);
    const grads: Record<string, Float32Array> = {};
    for (const t of this.trained) grads[t.name] = out[`grad.${t.name}`].f;
    return { loss: out.loss.f[0], mse: out.mse.f[0], grads };
  }

  params() {
    return this.trained.map((t) => ({ ...t, weightDecay: true }));
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}
