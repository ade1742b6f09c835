/**
 * The denoising objective as one ONNX training graph: (optionally) the text encoder, the UNet, the
 * noise-prediction loss with per-sample weights and per-pixel masks, and the appended backward pass, so a
 * single session run gives the loss and the gradient of every trained tensor. What is trained is chosen by
 * name: LoRA factors on chosen linears, raw UNet weights (cross-attention K/V, or all), text-encoder weights,
 * or new token-embedding rows (every other row frozen).
 *
 * The host side (`DiffusionTrainer.computeGradients`) samples noise and timesteps from the micro-batch's rng,
 * noises the latents with the DDPM schedule, and forms the target (epsilon or v), so a seeded run replays.
 * Methods that regress onto something else give the target themselves: per example, or by a callback at the
 * drawn x_t and t (Concept Sliders: the frozen model's guided eps, see `frozen_unet.ts`), and examples may
 * bring their own x_t and t (the end of a partial denoising run). Auxiliary terms on trained values (text
 * probes, CIDM's orthogonality and shared subspace; `aux_losses.ts`) join the loss in the same graph.
 *
 * @example
 * ```ts
 * const trainer = await DiffusionTrainer.create(runner, folder, { batch: 2, lora: { targets, rank: 4, alpha: 4 } });
 * const { loss, grads } = await trainer.computeGradients(examples, rng);
 * ```
 */
import { GraphBuilder, type Value } from "../graph/builder.ts";
import { appendBackward } from "../graph/autodiff.ts";
import { ModelContext } from "../models/layers.ts";
import { loraInputNames } from "../models/layers.ts";
import { WeightSource } from "../models/weights.ts";
import { buildUNet2DCondition } from "../models/unet_2d_condition.ts";
import { buildClipTextModel, EXTRA_TOKENS_INPUT } from "../models/clip_text_model.ts";
import { type ModelFolder, textEncoderWeights } from "../models/model_folder.ts";
import type { EngineRunner, RemoteSession } from "../ort/runner.ts";
import { alphasCumprod, betasFor } from "../schedulers/scheduler.ts";
import { Rng } from "../random.ts";
import { Tensor } from "../tensor.ts";
import { numel } from "../models/safetensors.ts";
import type { LoraWeights } from "../pipelines/stable_diffusion.ts";
import { type AuxLoss, AuxLossGraph } from "./aux_losses.ts";
import { type TextProbe, textProbeLoss } from "./text_probe_loss.ts";
import { contextLength, FrozenTextEncoder, tokenizeCaptions } from "./frozen_text_encoder.ts";

export type PredictionType = "epsilon" | "v_prediction";

export interface DiffusionTrainingOptions {
  /** Samples per run of the graph. */
  batch: number;
  /**
   * LoRA on UNet linears whose module path matches; factors are trained, `alpha / rank` scales them. `init` of
   * the down factor: PEFT's default kaiming-uniform (bound 1/sqrt(in)), or "gaussian" (std 1/rank, PEFT's
   * `init_lora_weights="gaussian"`, what diffusers' DreamBooth LoRA script uses); up starts at zero either way.
   */
  lora?: {
    targets: RegExp[];
    rank: number;
    alpha: number;
    seed?: number;
    init?: "kaiming_uniform" | "gaussian";
  };
  /** Raw UNet weights to train, by diffusers name (e.g. K/V of attn2, or every weight). */
  unetTrainable?: (name: string) => boolean;
  /**
   * Put the text encoder in the graph (needed to train any of it); names without the `text_model.` prefix.
   * `lora` puts trained LoRA factors on its linears (module paths like `encoder.layers.0.self_attn.q_proj`),
   * with the UNet LoRA's rank, alpha and init.
   */
  textEncoder?: { trainable?: (name: string) => boolean; extraTokens?: number; lora?: { targets: RegExp[] } };
  /** Default: the folder's scheduler config, else epsilon. */
  predictionType?: PredictionType;
  /** Min-SNR-gamma loss weighting (diffusers' --snr_gamma); off when absent. */
  snrGamma?: number;
  /**
   * Auxiliary linear probes on the text encoder's output (pretraining only; needs `textEncoder`): shorthand for
   * one `textProbeLoss` term per probe (see `text_probe_loss.ts`), each reported in `probeLosses` by the probe's
   * name. Their tensors (`probe.<name>.weight`, `.bias`) are trained with kind "probe", never saved with the model.
   */
  textProbes?: TextProbe[];
  /**
   * Auxiliary terms added to the loss (after the probes), differentiated with it; each reported per run in
   * `auxLosses` by name (unweighted). See `aux_losses.ts`, `orthogonalityLoss`, `sharedSubspaceLoss`.
   */
  auxLosses?: AuxLoss[];
}

export type { TextProbe };

/** A tensor the optimizer updates; `kind` says where it lives (for saving adapters). */
export interface TrainedTensor {
  name: string;
  shape: number[];
  data: Float32Array;
  /** "probe" and "aux": tensors of auxiliary terms (probes, CIDM's subspaces), not part of the model. */
  kind: "lora" | "unet" | "text_encoder" | "token_embedding" | "probe" | "aux";
}

/**
 * One training example: a cached VAE posterior (scaled latents) that the trainer noises, or an x_t given
 * directly (`noisy` + `timestep`, e.g. the end of a partial denoising run, as Concept Sliders train), and the
 * caption or precomputed embeddings.
 */
export interface TrainingExample {
  /** Scaled latent mean [C, h, w] (VAE mean x scaling_factor); absent when `noisy` is given. */
  latent?: Float32Array;
  /** Scaled posterior std [C, h, w] to sample z = mean + std * eps; absent means use the mean. */
  latentStd?: Float32Array;
  /** x_t [C, h, w] to train at as is (no noise is sampled for it); needs `timestep` and a target. */
  noisy?: Float32Array;
  /** The training timestep (integer, 0 .. num_train_timesteps - 1) of `noisy`. */
  timestep?: number;
  /** The noise x_t was made with, when known; handed to a target callback. */
  noise?: Float32Array;
  /** The regression target [C, h, w], instead of the eps or v the trainer forms or a target callback gives. */
  target?: Float32Array;
  caption: string;
  /** Per-sample loss weight (e.g. prior-preservation lambda); default 1. */
  weight?: number;
  /** Per-pixel loss mask [h, w] (Custom Diffusion's paste augmentation); default all ones. */
  mask?: Float32Array;
  /**
   * Per text probe (by name), a class index for each token position (the tokenizer's padded length), -1 where
   * the position has no label; absent: no labels in this example.
   */
  probeLabels?: Record<string, Int32Array>;
}

/**
 * What a target callback gets: the run's inputs, flat over the batch ([B, C, h, w] and [B]), after noise and
 * timesteps were drawn. `noise` is the sampled noise of latent examples and the `noise` of noisy ones (NaN
 * where an example gave none); `latents` the clean z of latent examples (null for noisy ones).
 */
export interface TargetContext {
  noisy: Float32Array;
  timesteps: Float32Array;
  noise: Float32Array;
  latents: (Float32Array | null)[];
  examples: readonly TrainingExample[];
}

/** Computes the regression target [B, C, h, w] of a run (e.g. by the frozen model, see `FrozenUNet`). */
export type TargetFn = (ctx: TargetContext) => Promise<Float32Array>;

/** Per-run options of {@link DiffusionTrainer.computeGradients}. */
export interface GradientRunOptions {
  /**
   * The target of every example without its own `target`, instead of eps or v (Concept Sliders: the frozen
   * model's eps(neutral) + eta (eps(positive) - eps(negative)) at the same x_t and t).
   */
  target?: TargetFn;
  /** Multiplies every LoRA slot's alpha / rank for this run (a slider trained at scale -1 too); default 1. */
  loraScale?: number;
}

/** What one run gives. */
export interface GradientRun {
  /** The total loss: diffusion loss plus the weighted auxiliary terms. */
  loss: number;
  grads: Record<string, Float32Array>;
  /** Each text probe's mean cross-entropy, by probe name. */
  probeLosses: Record<string, number>;
  /** Each auxiliary term's unweighted value, by term name (the probes' as `probe.<name>`). */
  auxLosses: Record<string, number>;
}

export class DiffusionTrainer {
  private constructor(
    readonly folder: ModelFolder,
    readonly options: DiffusionTrainingOptions,
    readonly trained: TrainedTensor[],
    private readonly session: RemoteSession,
    private readonly fixedFeeds: Record<string, Tensor>,
    private readonly acp: Float32Array,
    readonly predictionType: PredictionType,
    private readonly withText: boolean,
    private readonly textEncoder: FrozenTextEncoder | null,
    readonly nodeCount: number,
    private readonly aux: AuxLossGraph,
    private readonly unetLoraPaths: string[],
  ) {}

  /** Builds the training graph for `folder` and opens its session in the engine thread. */
  static async create(
    runner: EngineRunner,
    folder: ModelFolder,
    o: DiffusionTrainingOptions,
  ): Promise<DiffusionTrainer> {
    const B = o.batch;
    const u = folder.unetConfig;
    const h = u.sample_size, w = u.sample_size;
    const L = contextLength(folder);
    const g = new GraphBuilder("diffusion_training");
    const trained: TrainedTensor[] = [];
    const fixedFeeds: Record<string, Tensor> = {};

    let ehs: Value | undefined;
    const loraContexts: ModelContext[] = [];
    const withText = !!o.textEncoder;
    if (o.textEncoder) {
      const t = o.textEncoder;
      if (t.lora && !o.lora) throw new RangeError("textEncoder.lora needs lora (its rank, alpha and init)");
      const ctx = new ModelContext(g, textEncoderWeights(folder), {
        trainable: t.trainable,
        lora: t.lora && o.lora ? { targets: t.lora.targets, rank: o.lora.rank } : undefined,
      });
      loraContexts.push(ctx);
      ehs = buildClipTextModel(ctx, folder.textConfig, {
        batch: B,
        sequence: L,
        extraTokens: !!t.extraTokens,
      });
      for (const [name, v] of ctx.trainables) trained.push({ name, ...v, kind: "text_encoder" });
      if (t.extraTokens) {
        trained.push({
          name: EXTRA_TOKENS_INPUT,
          shape: [t.extraTokens, folder.textConfig.hidden_size],
          data: new Float32Array(t.extraTokens * folder.textConfig.hidden_size),
          kind: "token_embedding",
        });
      }
    }
    const unetCtx = new ModelContext(g, WeightSource.fromFiles([folder.weights.unet]), {
      trainable: o.unetTrainable,
      lora: o.lora ? { targets: o.lora.targets, rank: o.lora.rank } : undefined,
    });
    const pred = buildUNet2DCondition(unetCtx, u, {
      batch: B,
      height: h,
      width: w,
      sequence: L,
      encoderHiddenStates: ehs,
      noOutput: true,
    });
    for (const [name, v] of unetCtx.trainables) trained.push({ name, ...v, kind: "unet" });
    loraContexts.push(unetCtx);
    // UNet slots first (the order of a UNet-only run), then the text encoder's.
    const loraModules = [unetCtx, ...loraContexts.filter((c) => c !== unetCtx)].flatMap((c) => c.loraModules);
    if (o.lora) {
      const rng = new Rng(o.lora.seed ?? 0);
      for (const m of loraModules) {
        const n = loraInputNames(m.path);
        // PEFT's inits: down random, up = 0, so training starts at the base model.
        const bound = 1 / Math.sqrt(m.inFeatures);
        const down = o.lora.init === "gaussian"
          ? rng.normal(o.lora.rank * m.inFeatures, 1 / o.lora.rank)
          : new Float32Array(o.lora.rank * m.inFeatures).map(() => (rng.uniform() * 2 - 1) * bound);
        trained.push({ name: n.down, shape: [o.lora.rank, m.inFeatures], data: down, kind: "lora" });
        trained.push({
          name: n.up,
          shape: [m.outFeatures, o.lora.rank],
          data: new Float32Array(m.outFeatures * o.lora.rank),
          kind: "lora",
        });
        fixedFeeds[n.scale] = Tensor.f32(
          [o.lora.rank],
          new Float32Array(o.lora.rank).fill(o.lora.alpha / o.lora.rank),
        );
      }
    }
    if (!trained.length) {
      throw new RangeError("nothing to train: give lora, unetTrainable or textEncoder.trainable/extraTokens");
    }

    // Loss: sum_b weight_b * sum(mask * (pred - target)^2) / (C * sum(mask)).
    const C = u.out_channels;
    const target = g.input("target", "float32", [B, C, h, w]);
    const mask = g.input("loss_mask", "float32", [B, 1, h, w]);
    const weight = g.input("loss_weight", "float32", [B]);
    const diff = g.op("Sub", [pred, target]);
    const sq = g.op("Mul", [g.op("Mul", [diff, diff]), mask]);
    const perSample = g.op("ReduceSum", [sq, g.ints([1, 2, 3])], { keepdims: 0 });
    const maskSum = g.op("ReduceSum", [mask, g.ints([1, 2, 3])], { keepdims: 0 });
    const denom = g.op("Mul", [g.op("Max", [maskSum, g.scalar(1e-6)]), g.scalar(C)]);
    const loss = g.op("ReduceSum", [g.op("Mul", [g.op("Div", [perSample, denom]), weight])], { keepdims: 0 });
    const aux = new AuxLossGraph(g, trained, {
      batch: B,
      sequence: L,
      textHiddenStates: ehs,
      loraModules: o.lora ? loraModules : [],
      lora: o.lora ? { rank: o.lora.rank, alpha: o.lora.alpha } : undefined,
    });
    const probes = o.textProbes ?? [];
    if (probes.length && !ehs) {
      throw new RangeError("textProbes need the text encoder in the graph (textEncoder)");
    }
    const total = aux.append(loss, [...probes.map(textProbeLoss), ...(o.auxLosses ?? [])]);
    g.output(total, "loss");
    const grads = appendBackward(g, total, trained.map((t) => g.valueOf(t.name)));
    grads.forEach((gr, i) => g.output(gr, `grad.${trained[i].name}`));

    const session = await runner.createSession(g.toBytes(), { inputs: g.inputs });
    // Without the encoder in the graph, captions are encoded once by a frozen one.
    const textEncoder = withText ? null : await FrozenTextEncoder.create(runner, folder);
    const acp = alphasCumprod(betasFor(folder.schedulerConfig));
    const predictionType = o.predictionType ??
      ((folder.schedulerConfig.prediction_type as PredictionType | undefined) ?? "epsilon");
    if (predictionType !== "epsilon" && predictionType !== "v_prediction") {
      throw new RangeError(`prediction_type must be epsilon or v_prediction, got ${predictionType}`);
    }
    return new DiffusionTrainer(
      folder,
      o,
      trained,
      session,
      fixedFeeds,
      acp,
      predictionType,
      withText,
      textEncoder,
      g.nodeCount,
      aux,
      o.lora ? unetCtx.loraModules.map((m) => m.path) : [],
    );
  }

  /**
   * Loss and gradients for `examples` (exactly `batch` of them) at the trained tensors' current values. Noise,
   * timesteps and latent samples come from `rng` (latent examples only, in order: t, then per value the
   * posterior sample and the noise; noisy examples draw nothing). The target of each example is its own
   * `target`, else `opts.target`'s, else eps or v from the drawn noise.
   *
   * @example
   * ```ts
   * // A slider step: x_t from a partial denoising run, the target from the frozen model.
   * const r = await trainer.computeGradients([{ noisy: xt, timestep: t, caption: "a person" }], rng, {
   *   target: ({ noisy, timesteps }) => sliderTarget(frozen, noisy, timesteps),
   * });
   * ```
   */
  async computeGradients(
    examples: TrainingExample[],
    rng: Rng,
    opts: GradientRunOptions = {},
  ): Promise<GradientRun> {
    const B = this.options.batch;
    if (examples.length !== B) throw new RangeError(`expected ${B} examples per run, got ${examples.length}`);
    const u = this.folder.unetConfig;
    const C = u.in_channels, h = u.sample_size, w = u.sample_size;
    const n = C * h * w;
    const noisy = new Float32Array(B * n), target = new Float32Array(B * n), noise = new Float32Array(B * n);
    const mask = new Float32Array(B * h * w), weight = new Float32Array(B), timestep = new Float32Array(B);
    const latents: (Float32Array | null)[] = [];
    const T = this.acp.length;
    const sized = (b: number, what: string, x: Float32Array | undefined) => {
      if (x && x.length !== n) {
        throw new RangeError(`example ${b}: ${what} has ${x.length} values, expected ${n} (${C}x${h}x${w})`);
      }
    };
    examples.forEach((ex, b) => {
      sized(b, "target", ex.target);
      let t: number;
      if (ex.noisy) {
        if (ex.latent) throw new RangeError(`example ${b}: give latent or noisy (x_t), not both`);
        sized(b, "noisy", ex.noisy);
        sized(b, "noise", ex.noise);
        if (!(Number.isInteger(ex.timestep) && ex.timestep! >= 0 && ex.timestep! < T)) {
          throw new RangeError(
            `example ${b}: noisy needs an integer timestep in 0..${T - 1}, got ${ex.timestep}`,
          );
        }
        if (!ex.target && !opts.target) {
          throw new RangeError(
            `example ${b}: a noisy example needs a target (its own, or a target callback)`,
          );
        }
        t = ex.timestep!;
        noisy.set(ex.noisy, b * n);
        if (ex.noise) noise.set(ex.noise, b * n);
        else noise.fill(NaN, b * n, (b + 1) * n);
        latents.push(null);
      } else {
        if (!ex.latent) throw new RangeError(`example ${b}: expected a latent or a noisy x_t, got neither`);
        sized(b, "latent", ex.latent);
        t = rng.int(T);
        const a = Math.sqrt(this.acp[t]), s = Math.sqrt(1 - this.acp[t]);
        const z = new Float32Array(n);
        for (let i = 0; i < n; i++) {
          z[i] = ex.latentStd ? ex.latent[i] + ex.latentStd[i] * rng.gauss() : ex.latent[i];
          const eps = rng.gauss();
          noise[b * n + i] = eps;
          noisy[b * n + i] = a * z[i] + s * eps;
          target[b * n + i] = this.predictionType === "epsilon" ? eps : a * eps - s * z[i];
        }
        latents.push(z);
      }
      timestep[b] = t;
      if (ex.mask) {
        if (ex.mask.length !== h * w) {
          throw new RangeError(`example ${b}: mask has ${ex.mask.length} values, expected ${h * w}`);
        }
        mask.set(ex.mask, b * h * w);
      } else mask.fill(1, b * h * w, (b + 1) * h * w);
      let wt = ex.weight ?? 1;
      if (this.options.snrGamma) {
        const snr = this.acp[t] / (1 - this.acp[t]);
        const base = Math.min(snr, this.options.snrGamma) / snr;
        wt *= this.predictionType === "epsilon" ? base : Math.min(snr, this.options.snrGamma) / (snr + 1);
      }
      weight[b] = wt / B;
    });
    if (opts.target && examples.some((ex) => !ex.target)) {
      const computed = await opts.target({ noisy, timesteps: timestep, noise, latents, examples });
      if (!(computed instanceof Float32Array) || computed.length !== B * n) {
        throw new RangeError(
          `the target callback must return a Float32Array of ${B * n} values (${B}x${C}x${h}x${w}), got ${
            computed instanceof Float32Array ? computed.length : typeof computed
          }`,
        );
      }
      target.set(computed);
    }
    examples.forEach((ex, b) => ex.target && target.set(ex.target, b * n));
    const feeds: Record<string, Tensor> = {
      ...this.fixedFeeds,
      ...this.scaledLoraFeeds(opts.loraScale),
      sample: Tensor.f32([B, C, h, w], noisy),
      timestep: Tensor.f32([B], timestep),
      target: Tensor.f32([B, C, h, w], target),
      loss_mask: Tensor.f32([B, 1, h, w], mask),
      loss_weight: Tensor.f32([B], weight),
    };
    const captions = examples.map((e) => e.caption);
    if (this.withText) {
      feeds.input_ids = Tensor.i64([B, contextLength(this.folder)], tokenizeCaptions(this.folder, captions));
    } else {
      feeds.encoder_hidden_states = await this.textEncoder!.embed(captions);
    }
    Object.assign(feeds, this.aux.feeds(examples));
    for (const t of this.trained) feeds[t.name] = Tensor.f32(t.shape, t.data);
    const auxOutputs = this.aux.outputs;
    const out = await this.session.run(feeds, [
      "loss",
      ...auxOutputs,
      ...this.trained.map((t) => `grad.${t.name}`),
    ]);
    const grads: Record<string, Float32Array> = {};
    for (const t of this.trained) grads[t.name] = out[`grad.${t.name}`].f;
    const auxLosses = Object.fromEntries(this.aux.names.map((name, i) => [name, out[auxOutputs[i]].f[0]]));
    const probeLosses = Object.fromEntries(
      (this.options.textProbes ?? []).map((p) => [p.name, auxLosses[`probe.${p.name}`]]),
    );
    return { loss: out.loss.f[0], grads, probeLosses, auxLosses };
  }

  /** The LoRA slots' scales times `scale` (none when 1 or absent: the fixed feeds hold them). */
  private scaledLoraFeeds(scale: number | undefined): Record<string, Tensor> {
    if (scale === undefined || scale === 1 || !this.options.lora) return {};
    if (!Number.isFinite(scale)) throw new RangeError(`loraScale must be a finite number, got ${scale}`);
    const feeds: Record<string, Tensor> = {};
    for (const [name, t] of Object.entries(this.fixedFeeds)) {
      if (name.startsWith("lora.") && name.endsWith(".scale")) {
        feeds[name] = Tensor.f32(t.dims, t.f.map((x) => x * scale));
      }
    }
    return feeds;
  }

  /**
   * The trained UNet LoRA as adapter weights (live views of the trained factors: they follow the optimizer),
   * for a frozen-model evaluator that denoises with the current adapter on (`FrozenUNet`). Text-encoder slots
   * are left out. RangeError when the trainer has no LoRA.
   */
  loraWeights(name = "training"): LoraWeights {
    const o = this.options.lora;
    if (!o) throw new RangeError("loraWeights: this trainer trains no LoRA (options.lora)");
    const byName = new Map(this.trained.map((t) => [t.name, t]));
    const modules = new Map<string, { down: Float32Array; up: Float32Array; rank: number }>();
    for (const path of this.unetLoraPaths) {
      const n = loraInputNames(path);
      modules.set(path, { down: byName.get(n.down)!.data, up: byName.get(n.up)!.data, rank: o.rank });
    }
    return { name, modules, alpha: o.alpha };
  }

  /** Parameters in the training loop's form (updated in place by the optimizer). */
  params() {
    return this.trained.map((t) => ({
      name: t.name,
      shape: t.shape,
      data: t.data,
      weightDecay: t.kind !== "token_embedding",
    }));
  }

  /** Trained parameter count. */
  trainedParameterCount(): number {
    return this.trained.reduce((s, t) => s + numel(t.shape), 0);
  }

  async release(): Promise<void> {
    await this.session.release();
    await this.textEncoder?.release();
  }
}
