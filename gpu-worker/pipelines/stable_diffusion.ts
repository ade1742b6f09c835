/**
 * The Stable Diffusion pipeline: text-to-image with classifier-free guidance and a negative prompt, and
 * image-to-image (SDEdit strength), n images per request, seeded and deterministic, with a per-step callback
 * (progress, latents for previews), cancellation, and LoRA adapters whose scales may change with the module
 * and the step. The text encoder is one producer of contexts among others: a request may bring its own
 * (`promptEmbeds`: SeeCoder, a merge), one per cross-attention block (`blockContexts`: CIDM's layer-wise
 * tokens) and regions (boxes, each with its prompt and adapters). Tokens a request brings live in a per-call
 * tokenizer overlay. It only orchestrates: models are ONNX sessions in the engine thread, schedulers are in
 * `schedulers/`; UNet graphs with more LoRA slots, per-block contexts or regions are built on first use
 * (one per variant) and then serve every request that needs them.
 *
 * @example
 * ```ts
 * const pipe = await StableDiffusionPipeline.load("models/tiny-shapes", runner);
 * const { images } = await pipe.generate({ prompt: "a red circle", seed: 1, steps: 20 });
 * ```
 */
import { JobInputError } from "../input_error.ts";
import type { EngineRunner, RemoteSession } from "../ort/runner.ts";
import type { ExecutionProvider } from "../ort/session.ts";
import type { GraphBuilder } from "../graph/builder.ts";
import {
  buildPipelineGraphs,
  crossAttentionPaths,
  loadModelFolder,
  type ModelFolder,
  textEncoderPrefix,
  unetGraph,
} from "../models/model_folder.ts";
import type { LoraModule } from "../models/layers.ts";
import { LORA_TARGET_SETS } from "../models/lora_targets.ts";
import {
  blockContextInput,
  blockRegionContextInput,
  REGION_CONTEXT_INPUT,
  REGION_MASKS_INPUT,
  type UNetConditioning,
} from "../models/conditioning.ts";
import { checkRegions, regionMasks } from "./regions.ts";
import { type InpaintMask, maskOnGrid, repaintShare } from "../image/mask.ts";
import { loraSlotFeeds, prepareLoraSlots, scaleFeeds } from "../adapters/lora_feeds.ts";
import { EXTRA_TOKENS_INPUT } from "../models/clip_text_model.ts";
import { createScheduler, type SchedulerName, timestepsForStrength } from "../schedulers/scheduler.ts";
import { Rng } from "../random.ts";
import type { ClipTokenizer } from "../tokenizer/clip_tokenizer.ts";
import { Tensor } from "../tensor.ts";
import { classifierFreeGuidance } from "./guidance.ts";
import { imagesToTensor, resizeBilinear, type RgbImage, tensorToImages } from "../image/png.ts";
import { REFERENCE_GUIDANCE_SCALE, referenceContexts } from "./reference_image.ts";
import { SeeCoderEncoder } from "../seecoder/encoder.ts";

/** A LoRA's factors per UNet module path (down [r, in], up [out, r]) and its alpha. */
export interface LoraWeights {
  name: string;
  modules: Map<string, { down: Float32Array; up: Float32Array; rank: number }>;
  /** diffusers scales by alpha / rank; absent means alpha = rank. */
  alpha?: number;
}

/**
 * A scale for all steps and modules, or a function of the step (0-based), the step count, the module path and
 * the step's timestep (sliders start late, CIDM weighs each layer, a LoRA block-weight preset, ...).
 * Text-encoder modules are asked with step 0 and timestep NaN: the prompt is encoded once.
 */
export type StepScale = number | ((step: number, total: number, path: string, timestep: number) => number);

export interface AdapterUse {
  lora: LoraWeights;
  scale: StepScale;
}

/**
 * A region of a regional prompt: a box in 0..1 image coordinates [x0, y0, x1, y1] (left, top, right, bottom),
 * its context (a prompt, or precomputed embeddings of the global context's length) and adapters acting only
 * inside it. `feather` (0..0.5, image units) softens the box's edges linearly.
 */
export interface RegionSpec {
  box: readonly [number, number, number, number];
  prompt?: string;
  promptEmbeds?: Tensor;
  adapters?: AdapterUse[];
  feather?: number;
}

/** A compiled UNet variant: its session, LoRA slots and the conditioning inputs it declares. */
interface UNetVariant {
  session: RemoteSession;
  loraModules: LoraModule[];
  conditioning: UNetConditioning;
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
  /** The prompt; may be absent when `promptEmbeds` is given. */
  prompt?: string;
  negativePrompt?: string;
  /**
   * The conditional context [1 or n, L, D] instead of encoding `prompt` (D = the UNet's cross_attention_dim, L
   * free: SeeCoder gives 148). The unconditional one is `negativePromptEmbeds`, else the encoded negative
   * prompt when L is the text encoder's length, else zeros (SeeCoder's unconditional embedding).
   */
  promptEmbeds?: Tensor;
  negativePromptEmbeds?: Tensor;
  /**
   * Prompt-Free Diffusion: the model folder's SeeCoder (`seecoder/`) encodes this image into the conditional
   * context in place of the prompt's; the unconditional one is zeros (a negative prompt does not apply) and
   * guidance defaults to 2.0. See `reference_image.ts`.
   */
  referenceImage?: RgbImage;
  /**
   * Per cross-attention module (paths like `down_blocks.0.attentions.0.transformer_blocks.0.attn2`), its own
   * conditional context [1 or n, L, D]; the other blocks get the global one, and the unconditional half of
   * guidance gets the unconditional context (zeros where its length differs).
   */
  blockContexts?: Record<string, Tensor>;
  /** Regional prompts (see {@link RegionSpec}); their contexts must have the global context's length. */
  regions?: RegionSpec[];
  /**
   * CIDM's region noise aggregation (default true with regions): besides the regional cross-attention, each
   * region's prompt (with its adapters) gets its own noise estimate, and the conditional estimate is their
   * mask-weighted mix with the regional one, so no concept is neglected when several are composed. Costs one
   * more UNet evaluation per region and step.
   */
  regionNoise?: boolean;
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
  /** img2img: the starting image and how much of the schedule to run (0..1]; default 0.8, 1 with a mask. */
  image?: RgbImage;
  strength?: number;
  /**
   * Inpainting (needs `image`, the same size): where the mask repaints, the latents are denoised freely; where
   * it keeps, they are set after every step to the image's latents noised to the next step's level (the same
   * noise as the start), and to the image's latents themselves after the last: diffusers' mask-preserving
   * blend for a 4-channel UNet. At strength 1 the chain starts from pure noise, as diffusers'. The decoded
   * image then gets the input's pixels back where the mask keeps (`pasteKept`, default true): a VAE decoder
   * with a mid-block attention is not local, so the kept latents alone do not keep the kept pixels (on
   * models/tiny-shapes they moved 13-45 of 255 on average when the other half was repainted).
   */
  mask?: InpaintMask;
  pasteKept?: boolean;
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
  /** UNet variants by key, built on first use ("" is the plain graph of load). */
  private readonly variants = new Map<string, Promise<UNetVariant>>();
  /** Module paths any variant can carry a LoRA slot on (the `all` target set), with their shapes. */
  readonly servableLoraModules: ReadonlyMap<string, LoraModule>;
  /** The model folder's SeeCoder, opened on the first reference image. */
  private seecoder: Promise<SeeCoderEncoder> | null = null;

  private constructor(
    readonly folder: ModelFolder,
    private readonly text: RemoteSession,
    unet: RemoteSession,
    private readonly vaeEnc: RemoteSession,
    private readonly vaeDec: RemoteSession,
    readonly loraModules: LoraModule[],
    readonly textLoraModules: LoraModule[],
    private readonly build: { runner: EngineRunner; ep: ExecutionProvider; cacheDir: string },
  ) {
    this.variants.set("", Promise.resolve({ session: unet, loraModules, conditioning: {} }));
    this.servableLoraModules = servableModules(folder);
  }

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
      { runner, ep, cacheDir: cache },
    );
  }

  /**
   * The UNet session for what a request needs: every LoRA slot of the `all` set (`wide`), per-block contexts,
   * regions. The plain graph serves requests that need none of them.
   */
  private variant(wide: boolean, conditioning: UNetConditioning): Promise<UNetVariant> {
    const key = [wide && "wide", conditioning.perBlockContext && "blocks", conditioning.regions && "regions"]
      .filter(Boolean).join("+");
    let v = this.variants.get(key);
    if (!v) {
      const lora = wide ? { targets: [...LORA_TARGET_SETS.all] } : undefined;
      const { graph, loraModules } = unetGraph(this.folder, { lora, conditioning });
      const { runner, ep, cacheDir } = this.build;
      v = session(runner, graph, ep, `${cacheDir}/${key}`).then((s) => ({
        session: s,
        loraModules,
        conditioning,
      }));
      this.variants.set(key, v);
      v.catch(() => this.variants.delete(key));
    }
    return v;
  }

  /** The model folder's SeeCoder (`<dir>/seecoder/`), opened on first use and then shared. */
  referenceEncoder(): Promise<SeeCoderEncoder> {
    if (!this.seecoder) {
      const { runner, ep } = this.build;
      this.seecoder = SeeCoderEncoder.load(this.folder.dir, runner, { ep });
      this.seecoder.catch(() => (this.seecoder = null));
    }
    return this.seecoder;
  }

  /** Text embeddings [texts, L, D] for prompts (padded to the tokenizer's length). */
  async encodePrompt(
    texts: string[],
    tokens: GenerateOptions["tokens"] = [],
    adapters: AdapterUse[] = [],
  ): Promise<Tensor> {
    // The call's tokens live in an overlay of the shared tokenizer: nothing here changes another call's split.
    const rows = new Map(this.extraEmbeddings);
    const { tokenizer, ids: tokenIds } = this.overlay(tokens);
    tokenIds.forEach((id, k) => rows.set(id - this.folder.textConfig.vocab_size, tokens[k].embedding));
    const maxLength = Math.min(
      this.folder.tokenizer.modelMaxLength,
      this.folder.textConfig.max_position_embeddings,
    );
    const { inputIds } = tokenizer.call(texts, {
      maxLength,
      padding: "max_length",
      truncation: true,
    });
    const ids = Tensor.i64([texts.length, maxLength], inputIds.flat());
    const out = await this.text.run({
      input_ids: ids,
      [EXTRA_TOKENS_INPUT]: this.extraRows(rows),
      // A per-step scale is taken at step 0: the prompt is encoded once.
      ...loraSlotFeeds(this.textLoraModules, adapters, 0, 1),
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
    this.checkTokens(tokens);
    const ids = this.folder.tokenizer.addTokens(tokens.map((t) => t.token));
    ids.forEach((id, k) => this.extraEmbeddings.set(id - base, Float32Array.from(tokens[k].embedding)));
    return ids;
  }

  /**
   * The tokenizer a call with `tokens` uses (the shared one plus them, with the ids `encodePrompt` gives
   * them), e.g. to find a modifier token's positions in a prompt.
   */
  tokenizerWith(tokens: { token: string; embedding: Float32Array }[]): ClipTokenizer {
    return this.overlay(tokens).tokenizer;
  }

  /** The shared tokenizer plus a call's tokens (checked), without changing the shared one. */
  private overlay(tokens: { token: string; embedding: Float32Array }[]) {
    this.checkTokens(tokens);
    return this.folder.tokenizer.withAddedTokens(tokens.map((t) => t.token));
  }

  /** Checks new tokens: each once, new words, the right embedding size. */
  private checkTokens(tokens: { token: string; embedding: Float32Array }[]): void {
    const D = this.folder.textConfig.hidden_size;
    const base = this.folder.textConfig.vocab_size;
    const seen = new Set<string>();
    tokens.forEach(({ token, embedding }) => {
      if (seen.has(token)) {
        throw new JobInputError(`token "${token}" is given twice; each new token needs one embedding`);
      }
      seen.add(token);
      if (embedding.length !== D) {
        throw new JobInputError(`embedding of "${token}" has ${embedding.length} values, expected ${D}`);
      }
      const existing = this.folder.tokenizer.encode(token);
      if (existing.length === 1 && existing[0] < base) {
        throw new JobInputError(
          `"${token}" is already in the base vocabulary (id ${existing[0]}); pick a new token`,
        );
      }
    });
  }

  /** The input embedding row of a base-vocabulary token id (for initializing new tokens from old ones). */
  tokenEmbedding(id: number): Float32Array {
    const D = this.folder.textConfig.hidden_size;
    const file = this.folder.weights.text_encoder;
    const prefix = textEncoderPrefix(this.folder);
    if (!(Number.isInteger(id) && id >= 0 && id < this.folder.textConfig.vocab_size)) {
      throw new JobInputError(
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
        throw new JobInputError(
          `${k} must be a multiple of ${multiple} between ${multiple} and 4096, got ${v}`,
        );
      }
    }
    const n = o.n ?? 1;
    if (!Number.isInteger(n) || n < 1 || n > 16) {
      throw new JobInputError(`n must be an integer in 1..16, got ${n}`);
    }
    const steps = o.steps ?? 20;
    if (!Number.isInteger(steps) || steps < 1 || steps > 500) {
      throw new JobInputError(`steps must be an integer in 1..500, got ${steps}`);
    }
    const guidance = o.guidanceScale ?? (o.referenceImage ? REFERENCE_GUIDANCE_SCALE : 7.5);
    if (!Number.isFinite(guidance) || guidance < 0 || guidance > 50) {
      throw new JobInputError(`guidanceScale must be in 0..50, got ${guidance}`);
    }
    const guidanceRescale = o.guidanceRescale ?? 0;
    if (!Number.isFinite(guidanceRescale) || guidanceRescale < 0 || guidanceRescale > 1) {
      throw new JobInputError(`guidanceRescale must be in 0..1, got ${guidanceRescale}`);
    }
    const strength = o.strength ?? (o.mask ? 1 : 0.8);
    if (o.image && !(strength > 0 && strength <= 1)) {
      throw new JobInputError(`strength must be in (0, 1], got ${strength}`);
    }
    if (o.mask) checkMask(o.mask, o.image);
    if (o.regions) checkRegions(o.regions);
    const seed = o.seed ?? Math.floor(Math.random() * 2 ** 31);
    if (!Number.isSafeInteger(seed) || seed < 0) {
      throw new JobInputError(`seed must be a non-negative integer, got ${seed}`);
    }
    return { width, height, n, steps, guidance, guidanceRescale, strength, seed };
  }

  /** Adapters whose modules the plain graph has no slot for (they need the wide variant); checked to exist. */
  private needsWide(adapters: AdapterUse[]): boolean {
    const plain = new Set(this.loraModules.map((m) => m.path));
    const text = new Set(this.textLoraModules.map((m) => m.path));
    let wide = false;
    for (const a of adapters) {
      for (const [path, w] of a.lora.modules) {
        if (plain.has(path) || text.has(path)) continue;
        const m = this.servableLoraModules.get(path);
        if (!m) {
          throw new JobInputError(
            `adapter "${a.lora.name}" targets ${path}, which is not a linear or convolution of this model's ` +
              `UNet or a LoRA slot of its text encoder`,
          );
        }
        if (w.down.length !== w.rank * m.inFeatures) {
          throw new JobInputError(
            `adapter "${a.lora.name}" at ${path}: down has ${w.down.length} values, expected ${w.rank} x ${m.inFeatures}`,
          );
        }
        wide = true;
      }
    }
    return wide;
  }

  /** The conditional and unconditional contexts [n, L, D] of a request, checked. */
  private async contexts(o: GenerateOptions, n: number, cfg: boolean) {
    const D = this.folder.unetConfig.cross_attention_dim;
    const textLength = Math.min(
      this.folder.tokenizer.modelMaxLength,
      this.folder.textConfig.max_position_embeddings,
    );
    const adapters = o.adapters ?? [];
    if (o.referenceImage) return await referenceContexts(this, o, n, cfg);
    let cond: Tensor;
    if (o.promptEmbeds) cond = expandContext(o.promptEmbeds, n, D, "promptEmbeds");
    else if (o.prompt !== undefined) {
      cond = await this.encodePrompt(Array(n).fill(o.prompt), o.tokens, adapters);
    } else throw new JobInputError("give prompt or promptEmbeds");
    let uncond: Tensor | null = null;
    if (cfg) {
      const L = cond.dims[1];
      if (o.negativePromptEmbeds) {
        uncond = expandContext(o.negativePromptEmbeds, n, D, "negativePromptEmbeds");
        if (uncond.dims[1] !== L) {
          throw new JobInputError(
            `negativePromptEmbeds has length ${uncond.dims[1]}, expected the prompt context's ${L}`,
          );
        }
      } else if (L === textLength) {
        uncond = await this.encodePrompt(Array(n).fill(o.negativePrompt ?? ""), o.tokens, adapters);
      } else uncond = Tensor.zeros([n, L, D]);
    }
    return { cond, uncond };
  }

  async generate(o: GenerateOptions): Promise<GenerateResult> {
    const t0 = performance.now();
    const v = this.validate(o);
    const f = this.folder;
    const scheduler = createScheduler(f.schedulerConfig, { name: o.scheduler });
    scheduler.setTimesteps(v.steps);
    const rng = new Rng(v.seed);
    const cfg = v.guidance > 1;
    const { cond, uncond } = await this.contexts(o, v.n, cfg);
    const emb = uncond ? Tensor.concat([uncond, cond]) : cond;
    const batch = cfg ? 2 * v.n : v.n;

    const C = f.unetConfig.in_channels;
    const h = v.height / f.vaeScaleFactor, w = v.width / f.vaeScaleFactor;

    // Conditioning: per-block contexts and regions pick the UNet variant that declares their inputs.
    const adapters: RegionalUse[] = [...(o.adapters ?? [])];
    const condFeeds: Record<string, Tensor> = {};
    const blockEntries = Object.entries(o.blockContexts ?? {});
    const regions = o.regions ?? [];
    const conditioning: UNetConditioning = {
      perBlockContext: blockEntries.length > 0,
      regions: regions.length > 0,
    };
    const paths = conditioning.perBlockContext ? crossAttentionPaths(f) : [];
    const D = f.unetConfig.cross_attention_dim;
    const blockContext = new Map<string, Tensor>();
    const regionContexts: Tensor[] = [];
    for (const [path, t] of blockEntries) {
      if (!paths.includes(path)) {
        throw new JobInputError(
          `blockContexts: "${path}" is not a cross-attention module of this UNet (e.g. ${paths[0]})`,
        );
      }
      const c = expandContext(t, v.n, D, `blockContexts["${path}"]`);
      const u = uncond && uncond.dims[1] === c.dims[1] ? uncond : Tensor.zeros(c.dims);
      blockContext.set(path, cfg ? Tensor.concat([u, c]) : c);
    }
    for (const p of paths) condFeeds[blockContextInput(p)] = blockContext.get(p) ?? emb;
    if (regions.length) {
      const L = cond.dims[1];
      const contexts: Tensor[] = [];
      for (const [i, r] of regions.entries()) {
        const where = `regions[${i}]`;
        let c: Tensor;
        if (r.promptEmbeds) c = expandContext(r.promptEmbeds, v.n, D, `${where}.promptEmbeds`);
        else if (r.prompt !== undefined) {
          c = await this.encodePrompt(Array(v.n).fill(r.prompt), o.tokens, [
            ...(o.adapters ?? []),
            ...(r.adapters ?? []),
          ]);
        } else throw new JobInputError(`${where}: give prompt or promptEmbeds`);
        if (c.dims[1] !== L) {
          throw new JobInputError(
            `${where}: context length ${c.dims[1]}, expected the global context's ${L}`,
          );
        }
        // The unconditional half sees the unconditional context in every region: guidance stays as without.
        contexts.push(uncond ? Tensor.concat([uncond, c]) : c);
        for (const a of r.adapters ?? []) adapters.push({ ...a, region: i + 1 });
      }
      const regionContext = Tensor.concat(contexts.map((c) => Tensor.f32([1, ...c.dims], c.f)));
      condFeeds[REGION_MASKS_INPUT] = regionMasks(regions, batch, h, w);
      regionContexts.push(...contexts);
      if (conditioning.perBlockContext) {
        for (const p of paths) {
          if (condFeeds[blockContextInput(p)].dims[1] !== L) {
            throw new JobInputError(
              `blockContexts["${p}"] must have the regions' context length ${L} to mix with them`,
            );
          }
          condFeeds[blockRegionContextInput(p)] = regionContext;
        }
      } else condFeeds[REGION_CONTEXT_INPUT] = regionContext;
    }
    const unet = await this.variant(this.needsWide(adapters), conditioning);
    // Factors concatenated once for the run; each step only rebuilds the scales.
    const slots = prepareLoraSlots(unet.loraModules, adapters, !!conditioning.regions);
    const regionSlots = regionContexts.map((_, r) =>
      prepareLoraSlots(
        unet.loraModules,
        adapters.filter((a) => !a.region).concat(
          adapters.filter((a) => a.region === r + 1).map((a) => ({ ...a, region: 0 })),
        ),
        true,
      )
    );

    const dims = [v.n, C, h, w];
    const noise = rng.normal(v.n * C * h * w);
    let timesteps: readonly number[] = scheduler.timesteps;
    let latents: Float32Array;
    let init: Tensor | undefined;
    const img = o.image ? resizeBilinear(o.image, v.width, v.height) : undefined;
    if (img) {
      init = await this.encodeImages(Array(v.n).fill(img));
      timesteps = timestepsForStrength(scheduler, v.strength).timesteps;
      latents = o.mask && v.strength === 1
        ? noise.map((x) => x * scheduler.initNoiseSigma)
        : scheduler.addNoise(init.f, noise, timesteps[0]);
    } else {
      latents = noise.map((x) => x * scheduler.initNoiseSigma);
    }

    const repaint = o.mask ? maskOnGrid(o.mask, h, w) : null;
    let evals = 0;
    let noMasks: Tensor | undefined;
    for (let i = 0; i < timesteps.length; i++) {
      if (o.signal?.aborted) throw new DOMException("generation canceled", "AbortError");
      const t = timesteps[i];
      const scaled = scheduler.scaleModelInput(latents, t);
      const input = new Float32Array(batch * scaled.length / v.n);
      input.set(scaled, 0);
      if (cfg) input.set(scaled, scaled.length);
      const out = await unet.session.run({
        sample: Tensor.f32([batch, C, h, w], input),
        timestep: Tensor.f32([batch], Array(batch).fill(t)),
        encoder_hidden_states: emb,
        ...condFeeds,
        ...scaleFeeds(slots, i, timesteps.length, t),
      }, ["out_sample"]);
      evals++;
      let pred = out.out_sample.f;
      if (regions.length && (o.regionNoise ?? true)) {
        // Each region's own estimate: its context everywhere, its adapters over the whole image.
        const masks = condFeeds[REGION_MASKS_INPUT];
        noMasks ??= Tensor.zeros(masks.dims);
        const estimates: Float32Array[] = [];
        for (const [r, context] of regionContexts.entries()) {
          const res = await unet.session.run({
            sample: Tensor.f32([batch, C, h, w], input),
            timestep: Tensor.f32([batch], Array(batch).fill(t)),
            encoder_hidden_states: context,
            ...condFeeds,
            ...(conditioning.perBlockContext
              ? Object.fromEntries(paths.map((p) => [blockContextInput(p), context]))
              : {}),
            [REGION_MASKS_INPUT]: noMasks,
            ...scaleFeeds(regionSlots[r], i, timesteps.length, t),
          }, ["out_sample"]);
          evals++;
          estimates.push(res.out_sample.f);
        }
        pred = mixRegionEstimates(pred, estimates, masks, cfg ? v.n : 0, C);
      }
      if (cfg) pred = classifierFreeGuidance(pred, v.n, v.guidance, v.guidanceRescale);
      latents = scheduler.step(pred, t, latents, rng);
      if (repaint && init) {
        const known = i + 1 < timesteps.length ? scheduler.addNoise(init.f, noise, timesteps[i + 1]) : init.f;
        keepMasked(latents, known, repaint);
      }
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
    if (o.mask && img && (o.pasteKept ?? true)) {
      const m = maskOnGrid(o.mask, v.height, v.width);
      for (const out of images) {
        for (let p = 0; p < m.length; p++) if (!m[p]) out.rgb.set(img.rgb.subarray(p * 3, p * 3 + 3), p * 3);
      }
    }
    return { images, seed: v.seed, timings: { totalMs: performance.now() - t0, unetEvals: evals } };
  }

  async release(): Promise<void> {
    const variants = await Promise.allSettled(this.variants.values());
    await Promise.all([
      this.text.release(),
      ...variants.map((r) => r.status === "fulfilled" ? r.value.session.release() : undefined),
      this.vaeEnc.release(),
      this.vaeDec.release(),
    ]);
  }
}

/**
 * The conditional half of `pred` replaced by the mask-weighted mix of the region estimates and itself (masks
 * [R, batch, h, w], renormalized where they overlap, as the UNet does), in place; `uncondN` samples of
 * unconditional estimates come first and are kept.
 */
function mixRegionEstimates(
  pred: Float32Array,
  estimates: Float32Array[],
  masks: Tensor,
  uncondN: number,
  C: number,
): Float32Array {
  const [R, batch, h, w] = masks.dims;
  const m = masks.f, hw = h * w;
  for (let b = uncondN; b < batch; b++) {
    for (let p = 0; p < hw; p++) {
      let total = 0;
      for (let r = 0; r < R; r++) total += m[(r * batch + b) * hw + p];
      const norm = Math.max(1, total);
      for (let c = 0; c < C; c++) {
        const k = (b * C + c) * hw + p;
        let v = pred[k] * (1 - total / norm);
        for (let r = 0; r < R; r++) v += (m[(r * batch + b) * hw + p] / norm) * estimates[r][k];
        pred[k] = v;
      }
    }
  }
  return pred;
}

/** Inpainting's mask checked against its image: given together, the same size, repainting something. */
function checkMask(mask: InpaintMask, image: RgbImage | undefined): void {
  if (!image) throw new JobInputError("a mask needs the image it repaints (give image with mask)");
  if (mask.width !== image.width || mask.height !== image.height) {
    throw new JobInputError(
      `the mask is ${mask.width}x${mask.height}, expected the image's size ${image.width}x${image.height}`,
    );
  }
  if (repaintShare(mask) === 0) {
    throw new JobInputError(
      "the mask repaints no pixel: transparent (or, in an opaque mask, white) pixels are repainted",
    );
  }
}

/** `latents` blended with `known` by `repaint` (h * w, 1 keeps the latents; broadcast over samples and channels), in place. */
function keepMasked(latents: Float32Array, known: Float32Array, repaint: Float32Array): void {
  const hw = repaint.length;
  for (let k = 0; k < latents.length; k++) {
    const m = repaint[k % hw];
    latents[k] = m * latents[k] + (1 - m) * known[k];
  }
}

/** An adapter and the region it acts in (absent or 0: the whole image; r + 1: region r). */
type RegionalUse = AdapterUse & { region?: number };

/** A context [1 or n, L, D] checked and repeated to [n, L, D]. */
function expandContext(t: Tensor, n: number, D: number, what: string): Tensor {
  const d = t.dims;
  if (d.length !== 3 || d[2] !== D || !(d[0] === 1 || d[0] === n) || d[1] < 1) {
    throw new JobInputError(`${what} must be [1 or ${n}, length, ${D}], got [${d.join(", ")}]`);
  }
  if (t.f.some((x) => !Number.isFinite(x))) throw new JobInputError(`${what} holds a non-finite value`);
  if (d[0] === n) return t;
  return Tensor.concat(Array(n).fill(t));
}

/** Every linear and convolution of the UNet that the `all` target set names, with its slot shape. */
function servableModules(f: ModelFolder): Map<string, LoraModule> {
  const out = new Map<string, LoraModule>();
  const targets = LORA_TARGET_SETS.all;
  for (const name of f.weights.unet.names()) {
    const m = name.match(/^(.*)\.weight$/);
    if (!m || !targets.some((r) => r.test(m[1]))) continue;
    const shape = f.weights.unet.entry(name).shape;
    if (shape.length === 2) {
      out.set(m[1], { path: m[1], inFeatures: shape[1], outFeatures: shape[0], kernel: 0 });
    } else if (shape.length === 4) {
      out.set(m[1], {
        path: m[1],
        inFeatures: shape[1] * shape[2] * shape[3],
        outFeatures: shape[0],
        kernel: shape[2],
      });
    }
  }
  return out;
}
