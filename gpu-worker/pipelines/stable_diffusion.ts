/**
 * The Stable Diffusion pipeline: text-to-image with classifier-free guidance and a negative prompt, and
 * image-to-image (SDEdit strength), n images per request, seeded and deterministic, with a per-step callback
 * (progress, latents for previews), cancellation, and LoRA adapters whose scales may change at every step.
 * It only orchestrates: models are ONNX sessions in the engine thread, schedulers are in `schedulers/`.
 *
 * @example
 * ```ts
 * const pipe = await StableDiffusionPipeline.load("models/tiny-shapes", runner);
 * const { images } = await pipe.generate({ prompt: "a red circle", seed: 1, steps: 20 });
 * ```
 */
import type { EngineRunner, RemoteSession } from "../ort/runner.ts";
import type { ExecutionProvider } from "../ort/session.ts";
import type { GraphBuilder } from "../graph/builder.ts";
import {
  buildPipelineGraphs,
  loadModelFolder,
  type ModelFolder,
  textEncoderPrefix,
} from "../models/model_folder.ts";
import { loraInputNames } from "../models/layers.ts";
import { EXTRA_TOKENS_INPUT } from "../models/clip_text_model.ts";
import { createScheduler, type SchedulerName, timestepsForStrength } from "../schedulers/scheduler.ts";
import { Rng } from "../random.ts";
import { Tensor } from "../tensor.ts";
import { classifierFreeGuidance } from "./guidance.ts";
import { imagesToTensor, resizeBilinear, type RgbImage, tensorToImages } from "../image/png.ts";

/** A LoRA's factors per UNet module path (down [r, in], up [out, r]) and its alpha. */
export interface LoraWeights {
  name: string;
  modules: Map<string, { down: Float32Array; up: Float32Array; rank: number }>;
  /** diffusers scales by alpha / rank; absent means alpha = rank. */
  alpha?: number;
}

/** A scale for all steps, or per step (sliders start late, fade in, ...). */
export type StepScale = number | ((step: number, total: number) => number);

export interface AdapterUse {
  lora: LoraWeights;
  scale: StepScale;
}

export interface StepInfo {
  step: number;
  total: number;
  timestep: number;
  /** Current latents [n, C, h, w]. */
  latents: Tensor;
  /** Decodes the sampler's current estimate of the final image (x0), for progress previews. */
  preview: () => Promise<RgbImage[]>;
}

export interface GenerateOptions {
  prompt: string;
  negativePrompt?: string;
  /** Images per request (default 1). */
  n?: number;
  steps?: number;
  guidanceScale?: number;
  /**
   * Guidance rescale phi in 0..1 (diffusers' `guidance_rescale`; default 0): pulls the guided prediction back
   * towards the conditional one's scale, against over-shooting with zero-terminal-SNR schedules (0.7 advised).
   */
  guidanceRescale?: number;
  scheduler?: SchedulerName;
  seed?: number;
  width?: number;
  height?: number;
  /** img2img: the starting image and how much of the schedule to run (0..1]. */
  image?: RgbImage;
  strength?: number;
  adapters?: AdapterUse[];
  /**
   * New tokens for this call only (e.g. Custom Diffusion's `<new1>` with its learned embedding): the prompt can
   * use them; they override tokens of the same name added with `addTokens`.
   */
  tokens?: { token: string; embedding: Float32Array }[];
  onStep?: (info: StepInfo) => void | Promise<void>;
  signal?: AbortSignal;
}

export interface GenerateResult {
  images: RgbImage[];
  seed: number;
  timings: { totalMs: number; unetEvals: number };
}

/** Session creation: small graphs go as bytes, large ones (beyond protobuf's limit) through files. */
async function session(runner: EngineRunner, g: GraphBuilder, ep: ExecutionProvider, cacheDir: string) {
  const spec = { inputs: g.inputs };
  if (g.initializerBytes() < 1.5e9) return await runner.createSession(g.toBytes(), spec, ep);
  const path = await g.saveModel(cacheDir);
  return await runner.createSession(path, spec, ep);
}

export class StableDiffusionPipeline {
  /** Embeddings of added tokens, by id - vocab_size. */
  private readonly extraEmbeddings = new Map<number, Float32Array>();

  private constructor(
    readonly folder: ModelFolder,
    private readonly text: RemoteSession,
    private readonly unet: RemoteSession,
    private readonly vaeEnc: RemoteSession,
    private readonly vaeDec: RemoteSession,
    readonly loraModules: { path: string; inFeatures: number; outFeatures: number }[],
    readonly textLoraModules: { path: string; inFeatures: number; outFeatures: number }[] = [],
  ) {}

  static async load(
    dir: string,
    runner: EngineRunner,
    opts: { ep?: ExecutionProvider; cacheDir?: string } = {},
  ): Promise<StableDiffusionPipeline> {
    const folder = await loadModelFolder(dir);
    const graphs = buildPipelineGraphs(folder);
    const ep = opts.ep ?? "cpu";
    const cache = opts.cacheDir ?? `${dir}/.onnx`;
    const [text, unet, vaeEnc, vaeDec] = await Promise.all([
      session(runner, graphs.textEncoder, ep, cache),
      session(runner, graphs.unet, ep, cache),
      session(runner, graphs.vaeEncoder, ep, cache),
      session(runner, graphs.vaeDecoder, ep, cache),
    ]);
    return new StableDiffusionPipeline(
      folder,
      text,
      unet,
      vaeEnc,
      vaeDec,
      graphs.loraModules,
      graphs.textLoraModules,
    );
  }

  /** Text embeddings [texts, L, D] for prompts (padded to the tokenizer's length). */
  async encodePrompt(
    texts: string[],
    tokens: GenerateOptions["tokens"] = [],
    adapters: AdapterUse[] = [],
  ): Promise<Tensor> {
    // Tokens, ids and rows are settled synchronously, so concurrent calls with other tokens cannot interleave.
    const rows = new Map(this.extraEmbeddings);
    for (const [k, id] of this.registerTokens(tokens).entries()) {
      rows.set(id - this.folder.textConfig.vocab_size, tokens[k].embedding);
    }
    const maxLength = Math.min(
      this.folder.tokenizer.modelMaxLength,
      this.folder.textConfig.max_position_embeddings,
    );
    const { inputIds } = this.folder.tokenizer.call(texts, {
      maxLength,
      padding: "max_length",
      truncation: true,
    });
    const ids = Tensor.i64([texts.length, maxLength], inputIds.flat());
    const out = await this.text.run({
      input_ids: ids,
      [EXTRA_TOKENS_INPUT]: this.extraRows(rows),
      // A per-step scale is taken at step 0: the prompt is encoded once.
      ...this.loraFeeds(this.textLoraModules, adapters, 0, 1),
    }, [
      "last_hidden_state",
    ]);
    return out.last_hidden_state;
  }

  /**
   * Adds tokens (e.g. `<new1>`) to the tokenizer with their embeddings (`dim` floats each), so prompts can use
   * them; a token added again gets its embedding replaced. Returns their ids.
   */
  addTokens(tokens: { token: string; embedding: Float32Array }[]): number[] {
    const base = this.folder.textConfig.vocab_size;
    const ids = this.registerTokens(tokens);
    ids.forEach((id, k) => this.extraEmbeddings.set(id - base, Float32Array.from(tokens[k].embedding)));
    return ids;
  }

  /** Adds the tokens to the tokenizer (checked: new words, right embedding size); returns their ids. */
  private registerTokens(tokens: { token: string; embedding: Float32Array }[]): number[] {
    const D = this.folder.textConfig.hidden_size;
    const base = this.folder.textConfig.vocab_size;
    const seen = new Set<string>();
    return tokens.map(({ token, embedding }) => {
      if (seen.has(token)) {
        throw new RangeError(`token "${token}" is given twice; each new token needs one embedding`);
      }
      seen.add(token);
      if (embedding.length !== D) {
        throw new RangeError(`embedding of "${token}" has ${embedding.length} values, expected ${D}`);
      }
      const existing = this.folder.tokenizer.encode(token);
      if (existing.length === 1 && existing[0] < base) {
        throw new RangeError(
          `"${token}" is already in the base vocabulary (id ${existing[0]}); pick a new token`,
        );
      }
      return this.folder.tokenizer.addTokens([token])[0];
    });
  }

  /** The input embedding row of a base-vocabulary token id (for initializing new tokens from old ones). */
  tokenEmbedding(id: number): Float32Array {
    const D = this.folder.textConfig.hidden_size;
    const file = this.folder.weights.text_encoder;
    const prefix = textEncoderPrefix(this.folder);
    if (!(Number.isInteger(id) && id >= 0 && id < this.folder.textConfig.vocab_size)) {
      throw new RangeError(
        `token id ${id} is outside the base vocabulary (0..${this.folder.textConfig.vocab_size - 1})`,
      );
    }
    return file.float32(`${prefix}embeddings.token_embedding.weight`).slice(id * D, (id + 1) * D);
  }

  /** Rows for added token ids, in id order; at least one row (an unused zero row) so the input is never empty. */
  private extraRows(rows: Map<number, Float32Array>): Tensor {
    const D = this.folder.textConfig.hidden_size;
    const n = Math.max(1, ...[...rows.keys()].map((k) => k + 1));
    const data = new Float32Array(n * D);
    for (const [k, row] of rows) data.set(row, k * D);
    return Tensor.f32([n, D], data);
  }

  /** Latents (scaled, as the UNet sees them) -> RGB images. */
  async decodeLatents(latents: Tensor): Promise<RgbImage[]> {
    const sf = this.folder.vaeConfig.scaling_factor;
    const shift = this.folder.vaeConfig.shift_factor;
    const z = Tensor.f32(latents.dims, latents.f.map((v) => v / sf + shift));
    const { decoded } = await this.vaeDec.run({ latents: z });
    return tensorToImages(decoded);
  }

  /** Images -> scaled latents (the posterior mean, as diffusers' img2img with a deterministic sample). */
  async encodeImages(images: RgbImage[]): Promise<Tensor> {
    const { latent_mean } = await this.vaeEnc.run({ image: imagesToTensor(images) }, ["latent_mean"]);
    const sf = this.folder.vaeConfig.scaling_factor;
    const shift = this.folder.vaeConfig.shift_factor;
    return Tensor.f32(latent_mean.dims, latent_mean.f.map((v) => (v - shift) * sf));
  }

  /** Checks request values before any work, with what was expected and what came. */
  private validate(o: GenerateOptions) {
    const f = this.folder;
    const multiple = f.vaeScaleFactor * 2 ** (f.unetConfig.block_out_channels.length - 1);
    const def = f.unetConfig.sample_size * f.vaeScaleFactor;
    const width = o.width ?? def, height = o.height ?? def;
    for (const [k, v] of [["width", width], ["height", height]] as const) {
      if (!Number.isInteger(v) || v < multiple || v % multiple !== 0 || v > 4096) {
        throw new RangeError(`${k} must be a multiple of ${multiple} between ${multiple} and 4096, got ${v}`);
      }
    }
    const n = o.n ?? 1;
    if (!Number.isInteger(n) || n < 1 || n > 16) {
      throw new RangeError(`n must be an integer in 1..16, got ${n}`);
    }
    const steps = o.steps ?? 20;
    if (!Number.isInteger(steps) || steps < 1 || steps > 500) {
      throw new RangeError(`steps must be an integer in 1..500, got ${steps}`);
    }
    const guidance = o.guidanceScale ?? 7.5;
    if (!Number.isFinite(guidance) || guidance < 0 || guidance > 50) {
      throw new RangeError(`guidanceScale must be in 0..50, got ${guidance}`);
    }
    const guidanceRescale = o.guidanceRescale ?? 0;
    if (!Number.isFinite(guidanceRescale) || guidanceRescale < 0 || guidanceRescale > 1) {
      throw new RangeError(`guidanceRescale must be in 0..1, got ${guidanceRescale}`);
    }
    const strength = o.strength ?? 0.8;
    if (o.image && !(strength > 0 && strength <= 1)) {
      throw new RangeError(`strength must be in (0, 1], got ${strength}`);
    }
    const seed = o.seed ?? Math.floor(Math.random() * 2 ** 31);
    if (!Number.isSafeInteger(seed) || seed < 0) {
      throw new RangeError(`seed must be a non-negative integer, got ${seed}`);
    }
    return { width, height, n, steps, guidance, guidanceRescale, strength, seed };
  }

  /** LoRA feeds for every slot of `modules`: adapters concatenated along the rank, one scale per rank row. */
  private loraFeeds(
    modules: { path: string; inFeatures: number; outFeatures: number }[],
    adapters: AdapterUse[],
    step: number,
    total: number,
  ): Record<string, Tensor> {
    const feeds: Record<string, Tensor> = {};
    for (const m of modules) {
      const uses = adapters.filter((a) => a.lora.modules.has(m.path));
      const rank = uses.reduce((r, a) => r + a.lora.modules.get(m.path)!.rank, 0);
      const names = loraInputNames(m.path);
      if (rank === 0) {
        feeds[names.down] = Tensor.zeros([1, m.inFeatures]);
        feeds[names.up] = Tensor.zeros([m.outFeatures, 1]);
        feeds[names.scale] = Tensor.zeros([1]);
        continue;
      }
      const down = new Float32Array(rank * m.inFeatures);
      const up = new Float32Array(m.outFeatures * rank);
      const scale = new Float32Array(rank);
      let r0 = 0;
      for (const a of uses) {
        const w = a.lora.modules.get(m.path)!;
        if (w.down.length !== w.rank * m.inFeatures || w.up.length !== m.outFeatures * w.rank) {
          throw new RangeError(
            `adapter "${a.lora.name}" at ${m.path}: expected down [${w.rank}, ${m.inFeatures}] and up [${m.outFeatures}, ${w.rank}]`,
          );
        }
        down.set(w.down, r0 * m.inFeatures);
        for (let o = 0; o < m.outFeatures; o++) {
          for (let r = 0; r < w.rank; r++) up[o * rank + r0 + r] = w.up[o * w.rank + r];
        }
        const s = typeof a.scale === "function" ? a.scale(step, total) : a.scale;
        scale.fill(s * ((a.lora.alpha ?? w.rank) / w.rank), r0, r0 + w.rank);
        r0 += w.rank;
      }
      feeds[names.down] = Tensor.f32([rank, m.inFeatures], down);
      feeds[names.up] = Tensor.f32([m.outFeatures, rank], up);
      feeds[names.scale] = Tensor.f32([rank], scale);
    }
    return feeds;
  }

  async generate(o: GenerateOptions): Promise<GenerateResult> {
    const t0 = performance.now();
    const v = this.validate(o);
    const f = this.folder;
    const scheduler = createScheduler(f.schedulerConfig, { name: o.scheduler });
    scheduler.setTimesteps(v.steps);
    const rng = new Rng(v.seed);
    const cfg = v.guidance > 1;
    const prompts = Array(v.n).fill(o.prompt);
    const negatives = Array(v.n).fill(o.negativePrompt ?? "");
    const emb = await this.encodePrompt(cfg ? [...negatives, ...prompts] : prompts, o.tokens, o.adapters);

    const C = f.unetConfig.in_channels;
    const h = v.height / f.vaeScaleFactor, w = v.width / f.vaeScaleFactor;
    const dims = [v.n, C, h, w];
    const noise = rng.normal(v.n * C * h * w);
    let timesteps: readonly number[] = scheduler.timesteps;
    let latents: Float32Array;
    if (o.image) {
      const img = resizeBilinear(o.image, v.width, v.height);
      const init = await this.encodeImages(Array(v.n).fill(img));
      timesteps = timestepsForStrength(scheduler, v.strength).timesteps;
      latents = scheduler.addNoise(init.f, noise, timesteps[0]);
    } else {
      latents = noise.map((x) => x * scheduler.initNoiseSigma);
    }

    const adapters = o.adapters ?? [];
    let evals = 0;
    for (let i = 0; i < timesteps.length; i++) {
      if (o.signal?.aborted) throw new DOMException("generation canceled", "AbortError");
      const t = timesteps[i];
      const scaled = scheduler.scaleModelInput(latents, t);
      const batch = cfg ? 2 * v.n : v.n;
      const input = new Float32Array(batch * scaled.length / v.n);
      input.set(scaled, 0);
      if (cfg) input.set(scaled, scaled.length);
      const out = await this.unet.run({
        sample: Tensor.f32([batch, C, h, w], input),
        timestep: Tensor.f32([batch], Array(batch).fill(t)),
        encoder_hidden_states: emb,
        ...this.loraFeeds(this.loraModules, adapters, i, timesteps.length),
      }, ["out_sample"]);
      evals++;
      let pred = out.out_sample.f;
      if (cfg) pred = classifierFreeGuidance(pred, v.n, v.guidance, v.guidanceRescale);
      latents = scheduler.step(pred, t, latents, rng);
      const x0 = scheduler.predOriginalSample ?? latents;
      await o.onStep?.({
        step: i + 1,
        total: timesteps.length,
        timestep: t,
        latents: Tensor.f32(dims, latents),
        preview: () => this.decodeLatents(Tensor.f32(dims, Float32Array.from(x0))),
      });
    }
    const images = await this.decodeLatents(Tensor.f32(dims, latents));
    return { images, seed: v.seed, timings: { totalMs: performance.now() - t0, unetEvals: evals } };
  }

  async release(): Promise<void> {
    await Promise.all([
      this.text.release(),
      this.unet.release(),
      this.vaeEnc.release(),
      this.vaeDec.release(),
    ]);
  }
}
