/**
 * The denoising objective as one ONNX training graph: (optionally) the text encoder, the UNet, the
 * noise-prediction loss with per-sample weights and per-pixel masks, and the appended backward pass, so a
 * single session run gives the loss and the gradient of every trained tensor. What is trained is chosen by
 * name: LoRA factors on chosen linears, raw UNet weights (cross-attention K/V, or all), text-encoder weights,
 * or new token-embedding rows (every other row frozen).
 *
 * The host side (`DiffusionTrainer.computeGradients`) samples noise and timesteps from the micro-batch's rng,
 * noises the latents with the DDPM schedule, and forms the target (epsilon or v), so a seeded run replays.
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
import { type ModelFolder, textEncoderGraph, textEncoderWeights } from "../models/model_folder.ts";
import type { EngineRunner, RemoteSession } from "../ort/runner.ts";
import { alphasCumprod, betasFor } from "../schedulers/scheduler.ts";
import { Rng } from "../random.ts";
import { Tensor } from "../tensor.ts";
import { numel } from "../models/safetensors.ts";

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
   * Auxiliary linear probes on the text encoder's output (pretraining only; needs `textEncoder`): each adds
   * `weight` x the mean cross-entropy of a linear classifier (`probe.<name>.weight` [classes, hidden] and
   * `.bias`, trained, never saved with the model) over the positions an example labels (`probeLabels`). It
   * asks the encoder to keep an attribute linearly readable at those positions (e.g. an object's colour at
   * every position after its colour word), not only where the UNet happened to look in training.
   */
  textProbes?: TextProbe[];
}

/** One auxiliary probe of {@link DiffusionTrainingOptions.textProbes}. */
export interface TextProbe {
  name: string;
  classes: number;
  weight: number;
}

/** A tensor the optimizer updates; `kind` says where it lives (for saving adapters). */
export interface TrainedTensor {
  name: string;
  shape: number[];
  data: Float32Array;
  kind: "lora" | "unet" | "text_encoder" | "token_embedding" | "probe";
}

/** One training example: cached VAE posterior (scaled latents) and the caption or precomputed embeddings. */
export interface TrainingExample {
  /** Scaled latent mean [C, h, w] (VAE mean x scaling_factor). */
  latent: Float32Array;
  /** Scaled posterior std [C, h, w] to sample z = mean + std * eps; absent means use the mean. */
  latentStd?: Float32Array;
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
    private readonly textSession: RemoteSession | null,
    readonly nodeCount: number,
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
    const L = Math.min(folder.tokenizer.modelMaxLength, folder.textConfig.max_position_embeddings);
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
    if (o.lora) {
      const rng = new Rng(o.lora.seed ?? 0);
      // UNet slots first (the order of a UNet-only run), then the text encoder's.
      const modules = [unetCtx, ...loraContexts.filter((c) => c !== unetCtx)].flatMap((c) => c.loraModules);
      for (const m of modules) {
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
    let total = loss;
    if (o.textProbes?.length) {
      if (!ehs) throw new RangeError("textProbes need the text encoder in the graph (textEncoder)");
      total = addTextProbes(g, ehs, o.textProbes, [B, L, folder.textConfig.hidden_size], trained, loss);
    }
    g.output(total, "loss");
    const grads = appendBackward(g, total, trained.map((t) => g.valueOf(t.name)));
    grads.forEach((gr, i) => g.output(gr, `grad.${trained[i].name}`));

    const session = await runner.createSession(g.toBytes(), { inputs: g.inputs });
    let textSession: RemoteSession | null = null;
    if (!withText) {
      // Captions are encoded once by a frozen text encoder.
      const tg = textEncoderGraph(folder);
      textSession = await runner.createSession(tg.toBytes(), { inputs: tg.inputs });
    }
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
      textSession,
      g.nodeCount,
    );
  }

  private captionCache = new Map<string, Float32Array>();

  private tokenize(captions: string[]): number[] {
    const L = Math.min(this.folder.tokenizer.modelMaxLength, this.folder.textConfig.max_position_embeddings);
    return this.folder.tokenizer.call(captions, { maxLength: L, padding: "max_length", truncation: true })
      .inputIds.flat();
  }

  /** Frozen text embeddings of captions (cached per caption). */
  private async embed(captions: string[]): Promise<Tensor> {
    const L = Math.min(this.folder.tokenizer.modelMaxLength, this.folder.textConfig.max_position_embeddings);
    const D = this.folder.textConfig.hidden_size;
    const missing = [...new Set(captions.filter((c) => !this.captionCache.has(c)))];
    if (missing.length) {
      const ids = Tensor.i64([missing.length, L], this.tokenize(missing));
      const { last_hidden_state } = await this.textSession!.run({
        input_ids: ids,
        [EXTRA_TOKENS_INPUT]: Tensor.zeros([1, D]),
      }, ["last_hidden_state"]);
      missing.forEach((c, i) =>
        this.captionCache.set(c, last_hidden_state.f.slice(i * L * D, (i + 1) * L * D))
      );
    }
    const out = new Float32Array(captions.length * L * D);
    captions.forEach((c, i) => out.set(this.captionCache.get(c)!, i * L * D));
    return Tensor.f32([captions.length, L, D], out);
  }

  /**
   * Loss and gradients for `examples` (exactly `batch` of them) at the trained tensors' current values. Noise,
   * timesteps and latent samples come from `rng`.
   */
  async computeGradients(
    examples: TrainingExample[],
    rng: Rng,
  ): Promise<{ loss: number; grads: Record<string, Float32Array>; probeLosses: Record<string, number> }> {
    const B = this.options.batch;
    if (examples.length !== B) throw new RangeError(`expected ${B} examples per run, got ${examples.length}`);
    const u = this.folder.unetConfig;
    const C = u.in_channels, h = u.sample_size, w = u.sample_size;
    const n = C * h * w;
    const noisy = new Float32Array(B * n), target = new Float32Array(B * n);
    const mask = new Float32Array(B * h * w), weight = new Float32Array(B), timestep = new Float32Array(B);
    const T = this.acp.length;
    examples.forEach((ex, b) => {
      if (ex.latent.length !== n) {
        throw new RangeError(
          `example ${b}: latent has ${ex.latent.length} values, expected ${n} (${C}x${h}x${w})`,
        );
      }
      const t = rng.int(T);
      timestep[b] = t;
      const a = Math.sqrt(this.acp[t]), s = Math.sqrt(1 - this.acp[t]);
      for (let i = 0; i < n; i++) {
        const z = ex.latentStd ? ex.latent[i] + ex.latentStd[i] * rng.gauss() : ex.latent[i];
        const eps = rng.gauss();
        noisy[b * n + i] = a * z + s * eps;
        target[b * n + i] = this.predictionType === "epsilon" ? eps : a * eps - s * z;
      }
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
    const feeds: Record<string, Tensor> = {
      ...this.fixedFeeds,
      sample: Tensor.f32([B, C, h, w], noisy),
      timestep: Tensor.f32([B], timestep),
      target: Tensor.f32([B, C, h, w], target),
      loss_mask: Tensor.f32([B, 1, h, w], mask),
      loss_weight: Tensor.f32([B], weight),
    };
    const captions = examples.map((e) => e.caption);
    if (this.withText) {
      const L = Math.min(
        this.folder.tokenizer.modelMaxLength,
        this.folder.textConfig.max_position_embeddings,
      );
      feeds.input_ids = Tensor.i64([B, L], this.tokenize(captions));
    } else {
      feeds.encoder_hidden_states = await this.embed(captions);
    }
    const probes = this.options.textProbes ?? [];
    for (const p of probes) Object.assign(feeds, this.probeFeeds(p, examples));
    for (const t of this.trained) feeds[t.name] = Tensor.f32(t.shape, t.data);
    const probeOutputs = probes.map((p) => `probe.${p.name}.loss`);
    const out = await this.session.run(feeds, [
      "loss",
      ...probeOutputs,
      ...this.trained.map((t) => `grad.${t.name}`),
    ]);
    const grads: Record<string, Float32Array> = {};
    for (const t of this.trained) grads[t.name] = out[`grad.${t.name}`].f;
    const probeLosses = Object.fromEntries(probes.map((p, i) => [p.name, out[probeOutputs[i]].f[0]]));
    return { loss: out.loss.f[0], grads, probeLosses };
  }

  /** One-hot targets [B, L, classes] and 1 / (labelled positions) of a probe, checked against its classes. */
  private probeFeeds(p: TextProbe, examples: TrainingExample[]): Record<string, Tensor> {
    const B = examples.length;
    const L = Math.min(this.folder.tokenizer.modelMaxLength, this.folder.textConfig.max_position_embeddings);
    const onehot = new Float32Array(B * L * p.classes);
    let count = 0;
    examples.forEach((ex, b) => {
      const labels = ex.probeLabels?.[p.name];
      if (!labels) return;
      if (labels.length !== L) {
        throw new RangeError(`example ${b}: probe "${p.name}" has ${labels.length} labels, expected ${L}`);
      }
      labels.forEach((c, l) => {
        if (c === -1) return;
        if (!(Number.isInteger(c) && c >= 0 && c < p.classes)) {
          throw new RangeError(
            `example ${b}: probe "${p.name}" label ${c} at position ${l} is outside 0..${
              p.classes - 1
            } (or -1)`,
          );
        }
        onehot[(b * L + l) * p.classes + c] = 1;
        count++;
      });
    });
    return {
      [`probe.${p.name}.target`]: Tensor.f32([B, L, p.classes], onehot),
      [`probe.${p.name}.inv_count`]: Tensor.f32([], new Float32Array([1 / Math.max(count, 1)])),
    };
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
    await this.textSession?.release();
  }
}

/**
 * Appends the probes' losses to `loss`: per probe, mean over labelled positions of -log softmax(h W^T + b)[label],
 * times its weight. Each probe's mean cross-entropy is also an output (`probe.<name>.loss`). Probe weights start
 * small and random (seeded by the probe's name), so the first steps do not pull hard on the encoder.
 */
function addTextProbes(
  g: GraphBuilder,
  hidden: Value,
  probes: TextProbe[],
  [B, L, D]: [number, number, number],
  trained: TrainedTensor[],
  loss: Value,
): Value {
  let total = loss;
  for (const p of probes) {
    if (!(Number.isInteger(p.classes) && p.classes >= 2)) {
      throw new RangeError(`probe "${p.name}": classes must be an integer >= 2, got ${p.classes}`);
    }
    if (!(p.weight >= 0)) throw new RangeError(`probe "${p.name}": weight must be >= 0, got ${p.weight}`);
    const wName = `probe.${p.name}.weight`, bName = `probe.${p.name}.bias`;
    const seed = [...p.name].reduce((s, ch) => (s * 31 + ch.charCodeAt(0)) >>> 0, 7);
    trained.push({
      name: wName,
      shape: [p.classes, D],
      data: new Rng(seed).normal(p.classes * D, 0.01),
      kind: "probe",
    });
    trained.push({ name: bName, shape: [p.classes], data: new Float32Array(p.classes), kind: "probe" });
    const W = g.input(wName, "float32", [p.classes, D]);
    const bias = g.input(bName, "float32", [p.classes]);
    const target = g.input(`probe.${p.name}.target`, "float32", [B, L, p.classes]);
    const invCount = g.input(`probe.${p.name}.inv_count`, "float32", []);
    const logits = g.op("Add", [g.op("MatMul", [hidden, g.op("Transpose", [W], { perm: [1, 0] })]), bias]);
    const logp = g.op("Log", [g.op("Add", [g.op("Softmax", [logits], { axis: -1 }), g.scalar(1e-8)])]);
    const nll = g.op("Neg", [g.op("ReduceSum", [g.op("Mul", [logp, target])], { keepdims: 0 })]);
    const mean = g.op("Mul", [nll, invCount]);
    g.output(mean, `probe.${p.name}.loss`);
    total = g.op("Add", [total, g.op("Mul", [mean, g.scalar(p.weight)])]);
  }
  return total;
}
