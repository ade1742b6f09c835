/**
 * AutoencoderKL training as one ONNX graph (for pretraining the tiny model's VAE): encode, sample the
 * posterior with the reparameterization trick (noise is an input, drawn by the host from the run's rng),
 * decode, and minimize reconstruction MSE + kl_weight * KL(q(z|x) || N(0, I)), with the backward pass appended.
 *
 * `decoderOnly` fine-tunes the decoder alone on fixed posterior samples (as Stability's ft-MSE decoder
 * fine-tune of SD's VAE): the latent space, and so every model trained on it, stays unchanged while
 * reconstructions get sharper. `l1Weight` adds mean |x - x̂| to the loss (sharper edges than MSE alone).
 * `pixelWeights` makes both reconstruction terms weighted means over pixels, with a per-pixel weight the caller
 * passes with each batch (e.g. larger on a scene's objects, which cover a small part of the image but carry the
 * attributes a prompt names; the unweighted mean lets the background dominate).
 *
 * `colourLatent` ties the first three latent channels to the image's colour: it adds
 * `weight * mean((mean_z[:, 0:3] - scale * avgpool(x))^2)`, the posterior mean's first channels against the
 * image (in [-1, 1]) averaged over each latent pixel's patch. Without it, nothing in the loss makes the latent
 * space arrange colours sensibly, and on ShapesWorld it did not: green landed between gray and black on one
 * line, so classifier-free guidance, which extrapolates away from the unconditional prediction, carried a
 * green object past green to black. With it, latents are roughly linear in colour (as SD's latents are), and
 * extrapolating a colour gives a more saturated version of it. The remaining channels stay free for detail.
 *
 * @example
 * ```ts
 * const vae = await VaeTrainer.create(runner, cfg, WeightSource.random(1), { batch: 8, size: 64 });
 * const { loss, grads } = await vae.computeGradients(images, rng);
 * ```
 */
import { GraphBuilder, type Value } from "../graph/builder.ts";
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
    readonly decoderOnly: boolean,
    /** `colourLatent.scale` when the colour term is on. */
    private readonly colourScale: number | null,
    private readonly pixelWeights: boolean,
  ) {}

  static async create(
    runner: EngineRunner,
    cfg: VaeConfig,
    weights: WeightSource,
    o: {
      batch: number;
      size: number;
      klWeight?: number;
      decoderOnly?: boolean;
      l1Weight?: number;
      colourLatent?: { weight: number; scale: number };
      pixelWeights?: boolean;
    },
  ): Promise<VaeTrainer> {
    if (o.colourLatent && (o.decoderOnly || cfg.in_channels !== 3 || cfg.latent_channels < 3)) {
      throw new RangeError(
        `colourLatent needs the encoder, 3 image channels and at least 3 latent channels; got ${
          o.decoderOnly
            ? "a decoder-only trainer"
            : `${cfg.in_channels} image and ${cfg.latent_channels} latent channels`
        }`,
      );
    }
    const g = new GraphBuilder("vae_training");
    const ctx = new ModelContext(g, weights, { trainable: () => true });
    const f = 2 ** (cfg.block_out_channels.length - 1);
    const lh = o.size / f;
    let z, kl = null, image, colour = null;
    if (o.decoderOnly) {
      z = g.input("latents", "float32", [o.batch, cfg.latent_channels, lh, lh]);
      image = g.input("image", "float32", [o.batch, cfg.in_channels, o.size, o.size]);
    } else {
      const { mean, logvar } = buildVaeEncoder(ctx, cfg, { batch: o.batch, height: o.size, width: o.size });
      const eps = g.input("eps", "float32", [o.batch, cfg.latent_channels, lh, lh]);
      const std = g.op("Exp", [g.op("Mul", [logvar, g.scalar(0.5)])]);
      z = g.op("Add", [mean, g.op("Mul", [std, eps])]);
      image = g.valueOf("image");
      kl = g.op("ReduceMean", [
        g.op("Sub", [
          g.op("Add", [g.op("Mul", [mean, mean]), g.op("Exp", [logvar])]),
          g.op("Add", [logvar, g.scalar(1)]),
        ]),
      ], { keepdims: 0 });
      if (o.colourLatent) {
        const target = g.input("colour_target", "float32", [o.batch, 3, lh, lh]);
        const head = g.op("Slice", [mean, g.ints([0]), g.ints([3]), g.ints([1])]);
        const dc = g.op("Sub", [head, target]);
        colour = g.op("ReduceMean", [g.op("Mul", [dc, dc])], { keepdims: 0 });
      }
    }
    const recon = buildVaeDecoder(ctx, cfg, { batch: o.batch, height: lh, width: lh, latents: z });
    const d = g.op("Sub", [recon, image]);
    // Weighted mean over pixels: mean(w * e) / mean(w) with w [N, 1, H, W] broadcast over channels.
    const pixelWeight = o.pixelWeights
      ? g.input("pixel_weight", "float32", [o.batch, 1, o.size, o.size])
      : null;
    const wmean = pixelWeight
      ? (e: Value) =>
        g.op("Div", [
          g.op("ReduceMean", [g.op("Mul", [e, pixelWeight])], { keepdims: 0 }),
          g.op("ReduceMean", [pixelWeight], { keepdims: 0 }),
        ])
      : (e: Value) => g.op("ReduceMean", [e], { keepdims: 0 });
    const mse = wmean(g.op("Mul", [d, d]));
    let loss = mse;
    if (kl) loss = g.op("Add", [loss, g.op("Mul", [kl, g.scalar(0.5 * (o.klWeight ?? 1e-4))])]);
    if (o.l1Weight) {
      const l1 = wmean(g.op("Abs", [d]));
      loss = g.op("Add", [loss, g.op("Mul", [l1, g.scalar(o.l1Weight)])]);
    }
    if (colour) loss = g.op("Add", [loss, g.op("Mul", [colour, g.scalar(o.colourLatent!.weight)])]);
    g.output(loss, "loss");
    g.output(mse, "mse");
    const trained = [...ctx.trainables].map(([name, v]) => ({ name, ...v }));
    appendBackward(g, loss, trained.map((t) => g.valueOf(t.name))).forEach((gr, i) =>
      g.output(gr, `grad.${trained[i].name}`)
    );
    const session = await runner.createSession(g.toBytes(), { inputs: g.inputs });
    return new VaeTrainer(
      cfg,
      trained,
      session,
      o.batch,
      o.size,
      !!o.decoderOnly,
      o.colourLatent?.scale ?? null,
      !!o.pixelWeights,
    );
  }

  /**
   * Loss (and reconstruction MSE) and gradients for a batch of images NCHW in [-1, 1]. A decoder-only trainer
   * also takes the (unscaled) latents to decode, e.g. posterior samples of a fixed encoder; a trainer made with
   * `pixelWeights` takes the weights [N, 1, H, W] (non-negative, not all zero per batch).
   */
  async computeGradients(
    images: Tensor,
    rng: Rng,
    latents?: Tensor,
    pixelWeight?: Tensor,
  ): Promise<{ loss: number; mse: number; grads: Record<string, Float32Array> }> {
    const f = 2 ** (this.config.block_out_channels.length - 1);
    const lh = this.size / f;
    const dims = [this.batch, this.config.latent_channels, lh, lh];
    const feeds: Record<string, Tensor> = { image: images };
    if (this.decoderOnly) {
      if (!latents) throw new TypeError("a decoder-only VaeTrainer needs the latents to decode");
      if (latents.dims.join() !== dims.join()) {
        throw new RangeError(`latents must be [${dims}], got [${latents.dims}]`);
      }
      feeds.latents = latents;
    } else {
      feeds.eps = Tensor.f32(dims, rng.normal(dims.reduce((a, b) => a * b)));
      if (this.colourScale !== null) feeds.colour_target = colourTarget(images, f, this.colourScale);
    }
    if (this.pixelWeights) {
      const want = [this.batch, 1, this.size, this.size];
      if (!pixelWeight || pixelWeight.dims.join() !== want.join()) {
        throw new RangeError(
          `this VaeTrainer weights pixels: pixel weights must be [${want}], got ${
            pixelWeight ? `[${pixelWeight.dims}]` : "none"
          }`,
        );
      }
      if (pixelWeight.f.some((v) => !Number.isFinite(v) || v < 0) || !pixelWeight.f.some((v) => v > 0)) {
        throw new RangeError("pixel weights must be finite, non-negative and not all zero");
      }
      feeds.pixel_weight = pixelWeight;
    } else if (pixelWeight) {
      throw new TypeError("pixel weights given to a VaeTrainer created without pixelWeights");
    }
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

/**
 * The colour term's target: each `f` x `f` patch of the first three image channels (NCHW) averaged, times
 * `scale`; [N, 3, H / f, W / f].
 */
export function colourTarget(images: Tensor, f: number, scale: number): Tensor {
  const [n, c, h, w] = images.dims;
  const lh = h / f, lw = w / f;
  const out = new Float32Array(n * 3 * lh * lw);
  for (let b = 0; b < n; b++) {
    for (let ch = 0; ch < 3; ch++) {
      const src = (b * c + ch) * h * w, dst = (b * 3 + ch) * lh * lw;
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          out[dst + Math.floor(y / f) * lw + Math.floor(x / f)] += images.f[src + y * w + x];
        }
      }
    }
  }
  const k = scale / (f * f);
  for (let i = 0; i < out.length; i++) out[i] *= k;
  return Tensor.f32([n, 3, lh, lw], out);
}
