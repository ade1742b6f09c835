/**
 * Training a SeeCoder for a base model (Prompt-Free Diffusion's training was never released; METHODS.md 4
 * gives the recipe users ask for): one ONNX graph of SeeCoder (reference image [B, 3, H, W] in [0, 1], static
 * size) -> embeddings [B, Q, D] -> the base model's UNet as the context of every cross-attention -> the
 * denoising loss on the target image's VAE latents, and the appended backward pass to SeeCoder's tensors.
 * The UNet and the VAE are frozen (initializers; the VAE encodes the targets in its own session); the decoder
 * and the query transformer are trained, and the Swin backbone too unless `freezeBackbone` (a fixed backbone
 * then: random, or pretrained weights given in `init`).
 *
 * The objective is the base model's own (its scheduler's `prediction_type`: epsilon MSE, or v for the tiny
 * model, which was pretrained with v-prediction on zero-terminal-SNR betas), with t uniform over the training
 * steps. With probability `dropProbability` an example's embeddings are multiplied by zero, so the model
 * learns the unconditional branch that guidance uses at inference (SeeCoder's unconditional context is zeros).
 *
 * @example
 * ```ts
 * const t = await SeeCoderTrainer.create(runner, folder, rawConfig, { batch: 16, seed: 0 });
 * const { loss, grads } = await t.computeGradients(references, targets, rng);
 * ```
 */
import { GraphBuilder } from "../graph/builder.ts";
import { appendBackward } from "../graph/autodiff.ts";
import { ModelContext } from "../models/layers.ts";
import { WeightSource } from "../models/weights.ts";
import { buildUNet2DCondition } from "../models/unet_2d_condition.ts";
import { buildVaeEncoder } from "../models/autoencoder_kl.ts";
import type { ModelFolder } from "../models/model_folder.ts";
import type { SafetensorsFile } from "../models/safetensors.ts";
import { numel } from "../models/safetensors.ts";
import {
  buildSeeCoder,
  parseSeeCoderConfig,
  SEECODER_INPUT,
  SEECODER_PREFIX,
  type SeeCoderConfig,
  seecoderTokens,
} from "../models/seecoder.ts";
import type { EngineRunner, RemoteSession } from "../ort/runner.ts";
import { alphasCumprod, betasFor } from "../schedulers/scheduler.ts";
import type { Rng } from "../random.ts";
import { Tensor } from "../tensor.ts";
import { imagesToTensor, type RgbImage } from "../image/png.ts";
import { unitImageTensor } from "./encoder.ts";

export interface SeeCoderTrainingOptions {
  batch: number;
  /** Seed of the random init of every tensor `init` does not hold. */
  seed: number;
  /** Keep the Swin backbone (`imencoder.*`) fixed. */
  freezeBackbone?: boolean;
  /** Starting weights by full name (`ctx.image.*`), e.g. a pretrained backbone or a checkpoint. */
  init?: SafetensorsFile;
  /** Chance of training an example with zero embeddings (the unconditional branch); default 0.1. */
  dropProbability?: number;
  /** Reference image side (default the base model's image size, sample_size x VAE scale factor). */
  size?: number;
}

/** A tensor the optimizer updates, by its official name. */
export interface SeeCoderTensor {
  name: string;
  shape: number[];
  data: Float32Array;
}

/** Weights by name: the ones of `init`, else seeded random ones. */
export class InitSource {
  static of(init: SafetensorsFile | undefined, seed: number): WeightSource {
    return init ? WeightSource.fromFiles([init]) : WeightSource.random(seed);
  }
}

/**
 * The SeeCoder tensors of a training graph built on `sc` (weights from `weights`): the trained ones (live
 * views the optimizer updates) and every tensor the model file holds (trained and fixed), by name.
 */
export function seecoderTensors(
  sc: ModelContext,
  weights: WeightSource,
  init: SafetensorsFile | undefined,
): { trained: SeeCoderTensor[]; all: SeeCoderTensor[] } {
  const trained: SeeCoderTensor[] = [...sc.trainables].map(([name, v]) => ({ name, ...v }));
  const all: SeeCoderTensor[] = [...trained];
  const trainedNames = new Set(trained.map((t) => t.name));
  for (const [name, shape] of weights.requested) {
    if (trainedNames.has(name)) continue;
    all.push({ name, shape, data: init ? init.float32(name) : weights.produced.get(name)!.data });
  }
  return { trained, all };
}

/** Runs a training graph with `feeds` plus the trained tensors' current values: its loss and `grad.<name>`s. */
export async function lossAndGradients(
  session: RemoteSession,
  feeds: Record<string, Tensor>,
  trained: SeeCoderTensor[],
): Promise<{ loss: number; grads: Record<string, Float32Array> }> {
  const all = { ...feeds };
  for (const t of trained) all[t.name] = Tensor.f32(t.shape, t.data);
  const out = await session.run(all, ["loss", ...trained.map((t) => `grad.${t.name}`)]);
  const grads: Record<string, Float32Array> = {};
  for (const t of trained) grads[t.name] = out[`grad.${t.name}`].f;
  return { loss: out.loss.f[0], grads };
}

/** `params()` of a SeeCoder training: no decay on norms, biases, embeddings and position-bias tables. */
export function seecoderParams(trained: SeeCoderTensor[]) {
  return trained.map((t) => ({
    name: t.name,
    shape: t.shape,
    data: t.data,
    weightDecay: t.shape.length > 1 && !/(embed|init_query|relative_position_bias_table)/.test(t.name),
  }));
}

export class SeeCoderTrainer {
  private constructor(
    readonly config: SeeCoderConfig,
    readonly trained: SeeCoderTensor[],
    /** Every SeeCoder tensor (trained and fixed), by name: what the model file holds. */
    readonly all: SeeCoderTensor[],
    private readonly session: RemoteSession,
    private readonly vae: RemoteSession,
    private readonly folder: ModelFolder,
    private readonly acp: Float32Array,
    private readonly opts: Required<Omit<SeeCoderTrainingOptions, "init">>,
    readonly nodeCount: number,
  ) {}

  static async create(
    runner: EngineRunner,
    folder: ModelFolder,
    rawConfig: Record<string, unknown>,
    o: SeeCoderTrainingOptions,
  ): Promise<SeeCoderTrainer> {
    const config = parseSeeCoderConfig(rawConfig);
    const u = folder.unetConfig;
    if (config.qtransformer.hidden_dim !== u.cross_attention_dim) {
      throw new RangeError(
        `SeeCoder hidden_dim ${config.qtransformer.hidden_dim} differs from the UNet's cross_attention_dim ` +
          `${u.cross_attention_dim}`,
      );
    }
    const size = o.size ?? u.sample_size * folder.vaeScaleFactor;
    const B = o.batch;
    const Q = seecoderTokens(config);
    const g = new GraphBuilder("seecoder_training");
    const trainable = (n: string) =>
      n.startsWith(SEECODER_PREFIX) && !(o.freezeBackbone && n.startsWith(`${SEECODER_PREFIX}imencoder.`));
    const weights = InitSource.of(o.init, o.seed);
    const sc = new ModelContext(g, weights, { trainable });
    const emb = buildSeeCoder(sc, config, { batch: B, height: size, width: size });
    const keep = g.input("cond_keep", "float32", [B, 1, 1]);
    const ehs = g.op("Mul", [emb, keep]);
    const unetCtx = new ModelContext(g, WeightSource.fromFiles([folder.weights.unet]));
    const h = u.sample_size, w = u.sample_size, C = u.out_channels;
    const pred = buildUNet2DCondition(unetCtx, u, {
      batch: B,
      height: h,
      width: w,
      sequence: Q,
      encoderHiddenStates: ehs,
      noOutput: true,
    });
    // Loss: sum(mask * (pred - target)^2) / (C * sum(mask)) over the batch; the mask weighs latent pixels
    // (all ones unless the caller gives per-pixel weights, e.g. the objects' pixels counted more).
    const target = g.input("target", "float32", [B, C, h, w]);
    const mask = g.input("loss_mask", "float32", [B, 1, h, w]);
    const diff = g.op("Sub", [pred, target]);
    const weighted = g.op("ReduceSum", [g.op("Mul", [g.op("Mul", [diff, diff]), mask])], { keepdims: 0 });
    const denom = g.op("Mul", [g.op("ReduceSum", [mask], { keepdims: 0 }), g.scalar(C)]);
    const loss = g.op("Div", [weighted, denom]);
    g.output(loss, "loss");
    const { trained, all } = seecoderTensors(sc, weights, o.init);
    const grads = appendBackward(g, loss, trained.map((t) => g.valueOf(t.name)));
    grads.forEach((gr, i) => g.output(gr, `grad.${trained[i].name}`));
    const session = await runner.createSession(g.toBytes(), { inputs: g.inputs });
    const vg = new GraphBuilder("vae_encoder");
    buildVaeEncoder(new ModelContext(vg, WeightSource.fromFiles([folder.weights.vae])), folder.vaeConfig);
    const vae = await runner.createSession(vg.toBytes(), { inputs: vg.inputs });
    const acp = alphasCumprod(betasFor(folder.schedulerConfig));
    return new SeeCoderTrainer(config, trained, all, session, vae, folder, acp, {
      batch: B,
      seed: o.seed,
      freezeBackbone: !!o.freezeBackbone,
      dropProbability: o.dropProbability ?? 0.1,
      size,
    }, g.nodeCount);
  }

  /** Pairs per run. */
  get batch(): number {
    return this.opts.batch;
  }

  /** The prediction type the loss regresses (the base model's). */
  get predictionType(): "epsilon" | "v_prediction" {
    const p = this.folder.schedulerConfig.prediction_type ?? "epsilon";
    if (p !== "epsilon" && p !== "v_prediction") throw new RangeError(`unsupported prediction_type ${p}`);
    return p;
  }

  /**
   * Loss and gradients for `batch` pairs: reference images (SeeCoder's input) and target images (encoded by the
   * frozen VAE, sampled from its posterior, noised). Draws from `rng`, in order: per example the drop, the
   * timestep, then per latent value the posterior sample and the noise. `keep` overrides the drawn drop for
   * every example (true: the reference's embeddings, false: zeros), for validation; the draw still happens.
   */
  async computeGradients(
    references: RgbImage[],
    targets: RgbImage[],
    rng: Rng,
    keepOverride?: boolean,
    /** Per-pixel loss weights [h * w] per example (latent resolution); default all ones. */
    weights?: Float32Array[],
  ): Promise<{ loss: number; grads: Record<string, Float32Array> }> {
    const B = this.opts.batch;
    if (references.length !== B || targets.length !== B) {
      throw new RangeError(
        `expected ${B} reference and target images, got ${references.length}/${targets.length}`,
      );
    }
    const u = this.folder.unetConfig;
    const sf = this.folder.vaeConfig.scaling_factor;
    const post = await this.vae.run({ image: imagesToTensor(targets) });
    const n = post.latent_mean.size / B;
    const noisy = new Float32Array(B * n), target = new Float32Array(B * n);
    const keep = new Float32Array(B), timestep = new Float32Array(B);
    const v = this.predictionType === "v_prediction";
    for (let b = 0; b < B; b++) {
      keep[b] = rng.uniform() < this.opts.dropProbability ? 0 : 1;
      if (keepOverride !== undefined) keep[b] = keepOverride ? 1 : 0;
      const t = rng.int(this.acp.length);
      timestep[b] = t;
      const a = Math.sqrt(this.acp[t]), s = Math.sqrt(1 - this.acp[t]);
      for (let i = b * n; i < (b + 1) * n; i++) {
        const z = (post.latent_mean.f[i] + Math.exp(0.5 * post.latent_logvar.f[i]) * rng.gauss()) * sf;
        const eps = rng.gauss();
        noisy[i] = a * z + s * eps;
        target[i] = v ? a * eps - s * z : eps;
      }
    }
    const shape = [B, u.in_channels, u.sample_size, u.sample_size];
    const hw = u.sample_size * u.sample_size;
    const mask = new Float32Array(B * hw).fill(1);
    weights?.forEach((m, b) => {
      if (m.length !== hw) throw new RangeError(`weights[${b}]: ${m.length} values, expected ${hw}`);
      mask.set(m, b * hw);
    });
    const feeds: Record<string, Tensor> = {
      [SEECODER_INPUT]: unitImageTensor(references),
      cond_keep: Tensor.f32([B, 1, 1], keep),
      sample: Tensor.f32(shape, noisy),
      timestep: Tensor.f32([B], timestep),
      target: Tensor.f32(shape, target),
      loss_mask: Tensor.f32([B, 1, u.sample_size, u.sample_size], mask),
    };
    return await lossAndGradients(this.session, feeds, this.trained);
  }

  /** Parameters in the training loop's form (updated in place by the optimizer). */
  params() {
    return seecoderParams(this.trained);
  }

  trainedParameterCount(): number {
    return this.trained.reduce((s, t) => s + numel(t.shape), 0);
  }

  parameterCount(): number {
    return this.all.reduce((s, t) => s + numel(t.shape), 0);
  }

  async release(): Promise<void> {
    await this.session.release();
    await this.vae.release();
  }
}
