/**
 * Custom Diffusion (Kumari et al., CVPR 2023): multi-concept customization by fine-tuning only the
 * cross-attention key/value projections (attn2 `to_k`, `to_v` of every transformer block; `crossattn` adds
 * `to_q` and `to_out.0`) plus one new embedding row per modifier token (`<new1>`, initialized from a rare
 * token; every other row stays frozen), with a regularization set trained alongside by plain MSE and the
 * paper's augmentation (`custom_diffusion_augment.ts`: rescale, paste on a zero canvas with a latent loss mask
 * and "a far away " / "very small ", crop with "zoomed in " / "close up ").
 *
 * Several concepts can be learned jointly in one run (each with its modifier token), or separately and merged
 * afterwards in closed form (`custom_diffusion_merge.ts`).
 *
 * Output folder: the adapter bundle `adapter.safetensors` (K/V weights under diffusers' processor names plus
 * the token embeddings; what the service stores), and diffusers' own files:
 * `pytorch_custom_diffusion_weights.safetensors` and one `<newN>.safetensors` per token. With `compress`, each
 * layer keeps only its top singular directions of W - W0 (the paper keeps 60%), and the sizes are reported.
 *
 * Batches: dataset item k is concept k mod N_c, its image (k div N_c) mod N_img, augmented; with
 * regularization, the micro-batch's second half are regularization images of that concept (its class prompt,
 * no augmentation), weighted so the loss is mean MSE(target) + lambda x mean MSE(regularization), as DreamBooth.
 *
 * @example
 * ```ts
 * const r = await customDiffusion(runner, { model: "models/tiny-shapes", out: "out/cat",
 *   concepts: [{ images, modifier_token: "<new1>", class_word: "star" }], config: { steps: 100 } });
 * const a = decodeCustomDiffusion(await Deno.readFile(r.adapterFile), "cat");
 * ```
 */
import { JobInputError } from "../input_error.ts";
import { z } from "zod";
import type { EngineRunner } from "../ort/runner.ts";
import {
  loadModelFolder,
  type ModelFolder,
  textEncoderPrefix,
  vaeEncoderGraph,
} from "../models/model_folder.ts";
import { EXTRA_TOKENS_INPUT } from "../models/clip_text_model.ts";
import { DiffusionTrainer, type TrainingExample } from "../training/diffusion_trainer.ts";
import {
  applyVariant,
  chooseVariant,
  LatentCache,
  resizeShorterSide,
  type TrainingImage,
} from "../training/data.ts";
import { runTraining } from "../training/loop.ts";
import { scaledPosterior, unpackPosterior } from "../training/posterior.ts";
import type { RgbImage } from "../image/png.ts";
import { Tensor } from "../tensor.ts";
import { Rng } from "../random.ts";
import { ClassImageCache } from "./class_images.ts";
import { type MethodRunOptions, runLoopOptions } from "./method_run.ts";
import { baseModelFacts, priorPreservationBatch, TINY_UNET_PARAMETERS } from "./dreambooth.ts";
import { customDiffusionAugment } from "./custom_diffusion_augment.ts";
import {
  CUSTOM_DIFFUSION_FILE_NAME,
  type CustomDiffusionAdapter,
  type CustomDiffusionLayer,
  encodeCustomDiffusion,
  splitDiffusersFiles,
} from "../adapters/custom_diffusion.ts";
import { compressLayer } from "./custom_diffusion_compress.ts";

/** The adapter bundle the service stores (weights + token embeddings + run description). */
export const CUSTOM_DIFFUSION_ADAPTER_FILE = "adapter.safetensors";

const Token = z.string().min(1).max(64).regex(/^\S+$/, { message: "a token is one word" });

/** The method's settings, named as the API's `custom_diffusion` input and the official script's flags. */
export const CustomDiffusionConfig = z.object({
  modifier_token: Token.default("<new1>"),
  /** A rare word of the base vocabulary whose embedding starts each modifier token's row. */
  initializer_token: Token.default("ktn"),
  class_word: z.string().max(100).default(""),
  freeze_model: z.enum(["crossattn_kv", "crossattn"]).default("crossattn_kv"),
  /** Default 250 for one concept, 500 for joint training (METHODS.md). */
  steps: z.number().int().min(1).max(100_000).optional(),
  /** Base learning rate before scale_lr (x batch) and the x2 with regularization; default by model scale. */
  learning_rate: z.number().positive().max(1).optional(),
  /** The official script's --scale_lr (default on): lr x batch size. */
  scale_lr: z.boolean().default(true),
  batch_size: z.number().int().min(1).max(64).default(2),
  /** Default: on when class words are given (or regularization images are). */
  with_prior_preservation: z.boolean().optional(),
  num_class_images: z.number().int().min(1).max(1000).default(200),
  prior_loss_weight: z.number().min(0).max(100).default(1),
  augment: z.boolean().default(true),
  hflip: z.boolean().default(false),
  /** Keep this fraction of each layer's singular values of W - W0 (the paper: 0.6); off when absent. */
  compress: z.number().gt(0).max(1).optional(),
  resolution: z.number().int().min(8).max(2048).optional(),
  seed: z.number().int().min(0).max(2 ** 53 - 1).default(0),
  max_grad_norm: z.number().positive().max(1000).default(1),
  class_sampling_steps: z.number().int().min(1).max(500).optional(),
  class_guidance_scale: z.number().min(0).max(50).optional(),
});
export type CustomDiffusionConfigInput = z.input<typeof CustomDiffusionConfig>;

/** Defaults that depend on the model's scale: `sd` METHODS.md's; `tiny` the ShapesWorld model's. */
export const CUSTOM_DIFFUSION_SCALE_DEFAULTS = {
  sd: {
    learningRate: 1e-5,
    classSamplingSteps: 50,
    classGuidanceScale: 7.5,
    promptTemplate: "photo of a {token} {class}",
    classTemplate: "photo of a {class}",
  },
  tiny: {
    learningRate: 2e-4,
    classSamplingSteps: 20,
    classGuidanceScale: 5,
    promptTemplate: "a {token} {class}",
    classTemplate: "a {class}",
  },
} as const;

/** One concept to learn: its images, modifier token and class word. */
export interface ConceptSpec {
  images: TrainingImage[];
  modifier_token: string;
  class_word: string;
  /** Default: the config's initializer token. */
  initializer_token?: string;
  /** User regularization images (with captions); default: generated for the class prompt. */
  regularization?: TrainingImage[];
}

export interface ResolvedConcept {
  modifier_token: string;
  class_word: string;
  initializer_token: string;
  /** "a {token} {class}" (SD: "photo of a {token} {class}"). */
  instance_prompt: string;
  /** "a {class}" (SD: "photo of a {class}"); empty without a class word. */
  class_prompt: string;
  images: number;
}

export interface ResolvedCustomDiffusionConfig {
  freeze_model: "crossattn_kv" | "crossattn";
  steps: number;
  learning_rate: number;
  base_learning_rate: number;
  batch_size: number;
  with_prior_preservation: boolean;
  num_class_images: number;
  prior_loss_weight: number;
  augment: boolean;
  hflip: boolean;
  compress: number | null;
  resolution: number;
  seed: number;
  max_grad_norm: number;
  class_sampling_steps: number;
  class_guidance_scale: number;
  concepts: ResolvedConcept[];
  model_scale: "sd" | "tiny";
}

/** Which UNet weights train: attn2 K/V (`crossattn_kv`) or every attn2 projection weight (`crossattn`). */
export function trainedLayerPattern(freeze: "crossattn_kv" | "crossattn"): RegExp {
  return freeze === "crossattn_kv"
    ? /\.attn2\.(to_k|to_v)\.weight$/
    : /\.attn2\.(to_q|to_k|to_v|to_out\.0)\.weight$/;
}

/**
 * Validates settings against the concepts and the base model and fills every default. RangeError for what the
 * method cannot run (a token already in the vocabulary, an initializer that is not one token, ...).
 */
export function resolveCustomDiffusionConfig(
  input: CustomDiffusionConfigInput,
  concepts: {
    modifier_token: string;
    class_word: string;
    initializer_token?: string;
    images?: readonly unknown[];
    regularization?: readonly unknown[];
  }[],
  folder: ModelFolder,
): ResolvedCustomDiffusionConfig {
  const c = CustomDiffusionConfig.strict().parse(input);
  if (!concepts.length) throw new JobInputError("Custom Diffusion needs at least one concept, got none");
  const facts = baseModelFacts(folder);
  const scale = facts.unetParameters < TINY_UNET_PARAMETERS ? "tiny" : "sd";
  const d = CUSTOM_DIFFUSION_SCALE_DEFAULTS[scale];
  if (c.resolution !== undefined && c.resolution !== facts.resolution) {
    throw new JobInputError(`resolution ${c.resolution}: this base model trains at ${facts.resolution}`);
  }
  const tok = folder.tokenizer;
  const base = folder.textConfig.vocab_size;
  const seen = new Set<string>();
  const resolved = concepts.map((k, i): ResolvedConcept => {
    const where = concepts.length > 1 ? `concepts[${i}].` : "";
    const token = k.modifier_token;
    if (seen.has(token)) throw new JobInputError(`${where}modifier_token "${token}" is used by two concepts`);
    seen.add(token);
    const ids = tok.encode(token);
    if (ids.length === 1 && ids[0] < base) {
      throw new JobInputError(
        `${where}modifier_token "${token}" is already a word of the base vocabulary; pick a new one`,
      );
    }
    const init = k.initializer_token ?? c.initializer_token;
    const initIds = tok.encode(init);
    if (initIds.length !== 1 || initIds[0] >= base) {
      throw new JobInputError(
        `${where}initializer_token "${init}" must be one token of the base vocabulary; it is ${initIds.length} tokens`,
      );
    }
    const cls = k.class_word.trim();
    const fill = (t: string) =>
      t.replace("{token}", token).replace("{class}", cls).replace(/\s+/g, " ").trim();
    return {
      modifier_token: token,
      class_word: cls,
      initializer_token: init,
      instance_prompt: fill(d.promptTemplate),
      class_prompt: cls ? fill(d.classTemplate) : "",
      images: k.images?.length ?? 0,
    };
  });
  const anyReg = concepts.some((k) => (k.regularization?.length ?? 0) > 0);
  const prior = c.with_prior_preservation ?? (anyReg || resolved.every((k) => k.class_word !== ""));
  if (prior) {
    const missing = resolved.findIndex((k, i) => !k.class_word && !(concepts[i].regularization?.length));
    if (missing >= 0) {
      throw new JobInputError(
        `with_prior_preservation needs a class word (or regularization images) for concept ${missing}`,
      );
    }
  }
  const baseLr = c.learning_rate ?? d.learningRate;
  return {
    freeze_model: c.freeze_model,
    steps: c.steps ?? (concepts.length > 1 ? 500 : 250),
    base_learning_rate: baseLr,
    learning_rate: baseLr * (c.scale_lr ? c.batch_size : 1) * (prior ? 2 : 1),
    batch_size: c.batch_size,
    with_prior_preservation: prior,
    num_class_images: c.num_class_images,
    prior_loss_weight: c.prior_loss_weight,
    augment: c.augment,
    hflip: c.hflip,
    compress: c.compress ?? null,
    resolution: facts.resolution,
    seed: c.seed,
    max_grad_norm: c.max_grad_norm,
    class_sampling_steps: c.class_sampling_steps ?? d.classSamplingSteps,
    class_guidance_scale: c.class_guidance_scale ?? d.classGuidanceScale,
    concepts: resolved,
    model_scale: scale,
  };
}

export interface CustomDiffusionOptions extends MethodRunOptions {
  concepts: ConceptSpec[];
  config: CustomDiffusionConfigInput;
}

export interface CustomDiffusionResult {
  config: ResolvedCustomDiffusionConfig;
  losses: number[];
  evalLoss: { before: number; after: number };
  /** The bundle the service stores. */
  adapterFile: string;
  /** Every file written (bundle, diffusers weights, token files). */
  outputs: string[];
  trainedParameters: number;
  resumedFrom: number | null;
  /** Bytes of the K/V weights before and after compression (equal without it). */
  size: { full: number; stored: number };
  classImages: { generated: number; reused: number };
}

/** The first half of the trainer's rows: instance examples; the rest regularization (when on). */
interface Planned {
  concept: number;
  kind: "instance" | "class";
  index: number;
  weight: number;
}

function plan(
  indices: readonly number[],
  concepts: { images: number; reg: number }[],
  prior: boolean,
  lambda: number,
): Planned[] {
  const nc = concepts.length;
  const out: Planned[] = [];
  const regs: Planned[] = [];
  for (const k of indices) {
    const c = k % nc;
    const item = Math.floor(k / nc);
    const [inst, reg] = priorPreservationBatch(
      [item],
      concepts[c].images,
      prior ? concepts[c].reg : 0,
      lambda,
    );
    out.push({ concept: c, ...inst });
    if (reg) regs.push({ concept: c, ...reg });
  }
  return [...out, ...regs];
}

export async function customDiffusion(
  runner: EngineRunner,
  o: CustomDiffusionOptions,
): Promise<CustomDiffusionResult> {
  CustomDiffusionConfig.strict().parse(o.config);
  for (const [i, k] of o.concepts.entries()) {
    if (!k.images.length) throw new JobInputError(`concept ${i} ("${k.modifier_token}") has no images`);
  }
  const folder = await loadModelFolder(o.model);
  const cfg = resolveCustomDiffusionConfig(o.config, o.concepts, folder);
  const log = o.onLog ?? (() => {});
  const R = cfg.resolution;
  const f = folder.vaeScaleFactor;
  const square = (img: RgbImage) => {
    const r = resizeShorterSide(img, R);
    return applyVariant(r, chooseVariant(r.width, r.height, { resolution: R }), R);
  };
  const concepts = o.concepts.map((k) => ({
    images: k.images.map((t) => ({ image: square(t.image), caption: t.caption })),
    regularization: (k.regularization ?? []).map((t) => ({ image: square(t.image), caption: t.caption })),
  }));
  const prior = cfg.with_prior_preservation;
  const regCounts = concepts.map((k) => k.regularization.length || (prior ? cfg.num_class_images : 0));

  // Modifier tokens: ids vocab_size + k, rows initialized from the initializer tokens.
  const base = folder.textConfig.vocab_size, D = folder.textConfig.hidden_size;
  const ids = folder.tokenizer.addTokens(cfg.concepts.map((k) => k.modifier_token));
  ids.forEach((id, k) => {
    if (id !== base + k) {
      throw new JobInputError(
        `the tokenizer already has added tokens (got id ${id} for "${cfg.concepts[k].modifier_token}", ` +
          `expected ${base + k}); use a base model folder without added tokens`,
      );
    }
  });
  const table = folder.weights.text_encoder.float32(
    `${textEncoderPrefix(folder)}embeddings.token_embedding.weight`,
  );
  const initRows = new Float32Array(ids.length * D);
  cfg.concepts.forEach((k, i) => {
    const id = folder.tokenizer.encode(k.initializer_token)[0];
    initRows.set(table.subarray(id * D, (id + 1) * D), i * D);
  });

  const classCaches: (ClassImageCache | null)[] = [];
  let encoder: Awaited<ReturnType<EngineRunner["createSession"]>> | null = null;
  let trainer: DiffusionTrainer | null = null;
  try {
    for (const [i, k] of cfg.concepts.entries()) {
      if (!prior || concepts[i].regularization.length) {
        classCaches.push(null);
        continue;
      }
      const cache = await ClassImageCache.open(runner, {
        cacheDir: o.cacheDir ?? o.out,
        model: folder,
        prompt: k.class_prompt,
        sampling: { steps: cfg.class_sampling_steps, guidanceScale: cfg.class_guidance_scale },
      });
      log(
        `regularization: ${regCounts[i]} images of "${k.class_prompt}" generated by the base model (cached)`,
      );
      classCaches.push(cache);
    }
    const encGraph = vaeEncoderGraph(folder);
    encoder = await runner.createSession(encGraph.toBytes(), { inputs: encGraph.inputs });
    const enc = encoder;
    const sf = folder.vaeConfig.scaling_factor;
    const regImage = async (c: number, j: number): Promise<{ image: RgbImage; caption: string }> => {
      const user = concepts[c].regularization;
      if (user.length) {
        const t = user[j % user.length];
        return { image: t.image, caption: t.caption ?? cfg.concepts[c].class_prompt };
      }
      return { image: square(await classCaches[c]!.image(j)), caption: cfg.concepts[c].class_prompt };
    };
    // Regularization latents (no augmentation) cached per (concept, index).
    const maxReg = Math.max(1, ...regCounts);
    const regLatents = new LatentCache(async (key: number) => {
      const c = Math.floor(key / maxReg), j = key % maxReg;
      return await scaledPosterior(enc, (await regImage(c, j)).image, sf);
    }, 4096);
    const regCaption = async (c: number, j: number) => (await regImage(c, j)).caption;

    const perStep = cfg.batch_size * (prior ? 2 : 1);
    trainer = await DiffusionTrainer.create(runner, folder, {
      batch: perStep,
      unetTrainable: (name) => trainedLayerPattern(cfg.freeze_model).test(name),
      textEncoder: { trainable: () => false, extraTokens: ids.length },
    });
    const tr = trainer;
    const tokenRows = tr.trained.find((t) => t.name === EXTRA_TOKENS_INPUT)!;
    tokenRows.data.set(initRows);

    const instancePrompt = (c: number, i: number) =>
      concepts[c].images[i].caption ?? cfg.concepts[c].instance_prompt;
    const example = async (p: Planned, rng: Rng): Promise<TrainingExample> => {
      if (p.kind === "class") {
        return {
          ...unpackPosterior(
            await regLatents.get(p.concept * maxReg + p.index, { left: 0, top: 0, flip: false }),
          ),
          caption: await regCaption(p.concept, p.index),
          weight: p.weight,
        };
      }
      const a = customDiffusionAugment(
        concepts[p.concept].images[p.index].image,
        instancePrompt(p.concept, p.index),
        {
          resolution: R,
          vaeScaleFactor: f,
          augment: cfg.augment,
          hflip: cfg.hflip,
        },
        rng,
      );
      const { latent, latentStd } = unpackPosterior(
        await scaledPosterior(enc, Tensor.f32([1, 3, R, R], a.image), sf),
      );
      return { latent, latentStd, caption: a.prompt, mask: a.mask, weight: p.weight };
    };
    // Target images without augmentation, fixed noise: the same draws before and after training.
    const evaluate = async () => {
      let sum = 0, runs = 0;
      const all = cfg.concepts.flatMap((_, c) => concepts[c].images.map((_, i) => [c, i] as const));
      for (let start = 0; start < all.length; start += perStep) {
        const examples: TrainingExample[] = [];
        for (let k = 0; k < perStep; k++) {
          const [c, i] = all[(start + k) % all.length];
          const packed = await scaledPosterior(enc, concepts[c].images[i].image, sf);
          examples.push({ latent: unpackPosterior(packed).latent, caption: instancePrompt(c, i) });
        }
        sum += (await tr.computeGradients(examples, Rng.derive(cfg.seed, 0xe7a1, start))).loss;
        runs++;
      }
      return sum / runs;
    };
    const before = await evaluate();
    const sizes = concepts.map((k, c) => ({ images: k.images.length, reg: regCounts[c] }));
    const datasetSize = cfg.concepts.length *
      Math.max(...sizes.map((s) => Math.max(s.images, prior ? s.reg : 0)));
    log(
      `training ${tr.trainedParameterCount()} parameters (${cfg.freeze_model} + ${ids.length} token row(s)) on ` +
        `${
          cfg.concepts.map((k, c) => `${concepts[c].images.length} image(s) of "${k.instance_prompt}"`).join(
            ", ",
          )
        }, ` +
        `${cfg.steps} steps, lr ${cfg.learning_rate.toExponential(2)}`,
    );
    const res = await runTraining({
      params: tr.params(),
      datasetSize,
      steps: cfg.steps,
      batchSize: cfg.batch_size,
      seed: cfg.seed,
      optimizer: { lr: cfg.learning_rate, betas: [0.9, 0.999], weightDecay: 1e-2, eps: 1e-8 },
      lrSchedule: { name: "constant" },
      maxGradNorm: cfg.max_grad_norm,
      ...runLoopOptions(o, "custom_diffusion", cfg),
      gradients: async (mb) => {
        const examples: TrainingExample[] = [];
        for (const p of plan(mb.indices, sizes, prior, cfg.prior_loss_weight)) {
          examples.push(await example(p, mb.rng));
        }
        return await tr.computeGradients(examples, mb.rng);
      },
    });
    const after = await evaluate();

    const layers = new Map<string, CustomDiffusionLayer>();
    let full = 0, stored = 0;
    for (const t of tr.trained) {
      if (t.kind !== "unet") continue;
      const path = t.name.replace(/\.weight$/, "");
      const [out, inF] = t.shape;
      full += t.data.byteLength;
      let layer: CustomDiffusionLayer = { kind: "weight", out, in: inF, weight: t.data };
      if (cfg.compress !== null) {
        layer = compressLayer(t.data, folder.weights.unet.float32(t.name), out, inF, cfg.compress);
      }
      stored += layer.kind === "weight"
        ? layer.weight.byteLength
        : layer.up.byteLength + layer.down.byteLength;
      layers.set(path, layer);
    }
    const tokens = cfg.concepts.map((k, i) => ({
      token: k.modifier_token,
      embedding: tokenRows.data.slice(i * D, (i + 1) * D),
    }));
    const name = o.out.split("/").filter(Boolean).pop() ?? "custom_diffusion";
    const adapter: CustomDiffusionAdapter = {
      name,
      layers,
      tokens,
      info: {
        tokens: cfg.concepts.map((k) => k.modifier_token),
        class_words: cfg.concepts.map((k) => k.class_word),
        prompts: cfg.concepts.map((k) => k.instance_prompt),
        base_model: o.model,
        steps: cfg.steps,
        seed: cfg.seed,
        freeze_model: cfg.freeze_model,
        compressed: cfg.compress,
        training_config: cfg,
      },
    };
    await Deno.mkdir(o.out, { recursive: true });
    const adapterFile = `${o.out}/${CUSTOM_DIFFUSION_ADAPTER_FILE}`;
    await Deno.writeFile(adapterFile, encodeCustomDiffusion(adapter));
    const outputs = [adapterFile];
    for (const file of splitDiffusersFiles(adapter, folder.weights.unet)) {
      await Deno.writeFile(`${o.out}/${file.name}`, file.bytes);
      outputs.push(`${o.out}/${file.name}`);
    }
    if (cfg.compress !== null) {
      log(
        `compressed K/V changes to ${
          (100 * cfg.compress).toFixed(0)
        }% of singular values: ${full} -> ${stored} bytes`,
      );
    }
    const generated = classCaches.reduce((s, c) => s + (c?.generated ?? 0), 0);
    const reused = classCaches.reduce((s, c) => s + (c?.reused ?? 0), 0);
    return {
      config: cfg,
      losses: res.losses,
      evalLoss: { before, after },
      adapterFile,
      outputs,
      trainedParameters: tr.trainedParameterCount(),
      resumedFrom: res.resumedFrom,
      size: { full, stored },
      classImages: { generated, reused },
    };
  } finally {
    await trainer?.release();
    await encoder?.release();
    for (const c of classCaches) await c?.release();
  }
}

export { CUSTOM_DIFFUSION_FILE_NAME };
