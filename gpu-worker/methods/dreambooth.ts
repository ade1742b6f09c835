/**
 * DreamBooth (Ruiz et al., CVPR 2023): subject-driven fine-tuning from 3-10 images of one subject, bound to a
 * rare identifier in the instance prompt "a {token} {class}", with the class-specific prior preservation loss
 * L = MSE(instance) + lambda * MSE(class) on images of "a {class}" the base model generated itself (cached per
 * base model and prompt, see `class_images.ts`), so the class word keeps its meaning (no language drift).
 *
 * Modes: `lora` (default) trains LoRA factors on to_q/to_k/to_v/to_out.0 of every attention (attn1 and attn2),
 * gaussian-initialized as diffusers' DreamBooth LoRA script, and writes `pytorch_lora_weights.safetensors` with
 * diffusers keys (`unet.<module>.lora.down.weight` / `.lora.up.weight`) and the token, class word and training
 * config in its metadata; with `train_text_encoder` also LoRA on q/k/v/out_proj of the text encoder's
 * self-attentions (keys `text_encoder.text_model.<module>...`, as diffusers' script writes them). `full` trains
 * every UNet weight (and, with `train_text_encoder`, every text-encoder weight) and writes a model folder.
 *
 * Batches follow diffusers: dataset item k pairs instance image k mod N_inst with class image k mod N_class,
 * each micro-batch is its instance half then its class half in one graph run, with per-sample loss weights
 * that make the trainer's batch mean equal diffusers' `mse(instance) + lambda * mse(class)`. Class images are
 * generated when a batch first needs them (image i with seed i) and kept in the cache, so a short run pays for
 * the few it uses and a longer one tops the cache up.
 *
 * @example
 * ```ts
 * const r = await dreamBooth(runner, { model: "models/tiny-shapes", images: "photos/rex/", out: "out/rex",
 *   cacheDir: "/var/cache/personalize", config: { class_word: "star", steps: 200 } });
 * const { lora, token } = loadDreamBoothLora(await Deno.readFile(r.outputs[0]), "rex");
 * await pipe.generate({ prompt: `a ${token} star, blue background`, adapters: [{ lora, scale: 1 }] });
 * ```
 */
import { JobInputError } from "../input_error.ts";
import { z } from "zod";
import type { EngineRunner } from "../ort/runner.ts";
import {
  DEFAULT_LORA_TARGETS,
  loadModelFolder,
  type ModelFolder,
  TEXT_ENCODER_LORA_TARGETS,
  textEncoderPrefix,
  vaeEncoderGraph,
} from "../models/model_folder.ts";
import { loraInputNames } from "../models/layers.ts";
import { numel, type SafetensorsFile, type TensorData, writeSafetensors } from "../models/safetensors.ts";
import type { RgbImage } from "../image/png.ts";
import { DiffusionTrainer, type TrainingExample } from "../training/diffusion_trainer.ts";
import {
  applyVariant,
  chooseVariant,
  type CropVariant,
  LatentCache,
  loadImageFolder,
  resizeShorterSide,
  type TrainingImage,
} from "../training/data.ts";
import { runTraining } from "../training/loop.ts";
import { scaledPosterior, unpackPosterior } from "../training/posterior.ts";
import { copyFolder } from "../training/finetune.ts";
import { decodeLora, LORA_FILE_NAME, loraKeyPrefix, toLoraWeights } from "../adapters/lora.ts";
import type { LoraWeights } from "../pipelines/stable_diffusion.ts";
import { ClassImageCache } from "./class_images.ts";
import { type MethodRunOptions, runLoopOptions } from "./method_run.ts";
import { Rng } from "../random.ts";

/**
 * The method's settings, named as the API's `dreambooth` input (shared/training.ts) and diffusers' flags, with
 * METHODS.md's defaults. Settings whose right value depends on the base model's scale are left undefined
 * here and filled by {@link resolveDreamBoothConfig} from {@link DREAMBOOTH_SCALE_DEFAULTS}.
 */
export const DreamBoothConfig = z.object({
  /** The rare identifier bound to the subject. */
  token: z.string().min(1).max(64).regex(/^\S+$/, { message: "a token is one word" }).default("sks"),
  /** The subject's class noun ("dog", "star"); needed for prior preservation. */
  class_word: z.string().max(100).default(""),
  mode: z.enum(["lora", "full"]).default("lora"),
  steps: z.number().int().min(1).max(100_000).default(500),
  /** Default by mode and model scale (SD: LoRA 1e-4, full 5e-6). */
  learning_rate: z.number().positive().max(1).optional(),
  /** Instance images per step (with prior preservation, as many class images join them). */
  batch_size: z.number().int().min(1).max(64).default(1),
  rank: z.number().int().min(1).max(256).default(4),
  /** LoRA alpha; default = rank (scale 1), as diffusers' script. */
  alpha: z.number().positive().max(1024).optional(),
  /** Default: on when a class word is given (it names the class prompt). */
  with_prior_preservation: z.boolean().optional(),
  num_class_images: z.number().int().min(1).max(1000).default(100),
  /** lambda, the weight of the class (prior) loss. */
  prior_loss_weight: z.number().min(0).max(100).default(1),
  /** Also train the text encoder: LoRA on its self-attention projections (mode lora), every weight (full). */
  train_text_encoder: z.boolean().default(false),
  /** Must be the base model's native resolution when given. */
  resolution: z.number().int().min(8).max(2048).optional(),
  seed: z.number().int().min(0).max(2 ** 53 - 1).default(0),
  /** diffusers' --center_crop (default off: a seeded random crop, a no-op for square images). */
  center_crop: z.boolean().default(false),
  random_flip: z.boolean().default(false),
  /** Linear warmup of the constant schedule. */
  lr_warmup_steps: z.number().int().min(0).max(100_000).default(0),
  max_grad_norm: z.number().positive().max(1000).default(1),
  /** Sampling of class images; default by model scale (SD: the pipeline's 50 steps, guidance 7.5). */
  class_sampling_steps: z.number().int().min(1).max(500).optional(),
  class_guidance_scale: z.number().min(0).max(50).optional(),
});
export type DreamBoothConfigInput = z.input<typeof DreamBoothConfig>;

/**
 * Defaults that depend on the base model's scale. `sd`: METHODS.md's (diffusers' scripts for SD 1.x). `tiny`:
 * the ShapesWorld model (~2M UNet parameters, pretrained at lr 5e-4), where 1e-4 LoRA steps barely move the
 * output in a few hundred steps, and whose sampler is evaluated at 20 steps, guidance 5.
 */
export const DREAMBOOTH_SCALE_DEFAULTS = {
  sd: { loraLearningRate: 1e-4, fullLearningRate: 5e-6, classSamplingSteps: 50, classGuidanceScale: 7.5 },
  tiny: { loraLearningRate: 1e-3, fullLearningRate: 1e-4, classSamplingSteps: 20, classGuidanceScale: 5 },
} as const;

/** A UNet with fewer parameters than this takes the `tiny` defaults (SD 1.5's has 860M). */
export const TINY_UNET_PARAMETERS = 50_000_000;

/** Every setting decided: what a run used (stored in checkpoints and the adapter's metadata). */
export interface ResolvedDreamBoothConfig {
  token: string;
  class_word: string;
  mode: "lora" | "full";
  steps: number;
  learning_rate: number;
  batch_size: number;
  rank: number;
  alpha: number;
  with_prior_preservation: boolean;
  num_class_images: number;
  prior_loss_weight: number;
  train_text_encoder: boolean;
  resolution: number;
  seed: number;
  center_crop: boolean;
  random_flip: boolean;
  lr_warmup_steps: number;
  max_grad_norm: number;
  class_sampling_steps: number;
  class_guidance_scale: number;
  /** "a {token} {class}". */
  instance_prompt: string;
  /** "a {class}" (empty without a class word). */
  class_prompt: string;
  model_scale: "sd" | "tiny";
}

/** What the defaults need to know of the base model. */
export interface BaseModelFacts {
  unetParameters: number;
  /** Image side the UNet was built for (sample_size x VAE scale factor). */
  resolution: number;
}

export function baseModelFacts(folder: ModelFolder): BaseModelFacts {
  const unet = folder.weights.unet;
  return {
    unetParameters: unet.names().reduce((s, n) => s + numel(unet.entry(n).shape), 0),
    resolution: folder.unetConfig.sample_size * folder.vaeScaleFactor,
  };
}

/**
 * Validates the settings and fills every default (mode- and scale-dependent ones included). Throws ZodError
 * for a malformed field, RangeError for a combination the method cannot run.
 *
 * @example
 * ```ts
 * const cfg = resolveDreamBoothConfig({ class_word: "star" }, { unetParameters: 2e6, resolution: 64 });
 * cfg.learning_rate; // 1e-3 (tiny model, LoRA)
 * cfg.with_prior_preservation; // true
 * ```
 */
export function resolveDreamBoothConfig(
  input: DreamBoothConfigInput,
  model: BaseModelFacts,
): ResolvedDreamBoothConfig {
  const c = DreamBoothConfig.strict().parse(input);
  const classWord = c.class_word.trim();
  const prior = c.with_prior_preservation ?? classWord !== "";
  if (prior && !classWord) {
    throw new JobInputError(
      `with_prior_preservation needs class_word (the class prompt is "a {class_word}")`,
    );
  }
  if (c.resolution !== undefined && c.resolution !== model.resolution) {
    throw new JobInputError(`resolution ${c.resolution}: this base model trains at ${model.resolution}`);
  }
  const scale = model.unetParameters < TINY_UNET_PARAMETERS ? "tiny" : "sd";
  const d = DREAMBOOTH_SCALE_DEFAULTS[scale];
  return {
    token: c.token,
    class_word: classWord,
    mode: c.mode,
    steps: c.steps,
    learning_rate: c.learning_rate ?? (c.mode === "lora" ? d.loraLearningRate : d.fullLearningRate),
    batch_size: c.batch_size,
    rank: c.rank,
    alpha: c.alpha ?? c.rank,
    with_prior_preservation: prior,
    num_class_images: c.num_class_images,
    prior_loss_weight: c.prior_loss_weight,
    train_text_encoder: c.train_text_encoder,
    resolution: model.resolution,
    seed: c.seed,
    center_crop: c.center_crop,
    random_flip: c.random_flip,
    lr_warmup_steps: c.lr_warmup_steps,
    max_grad_norm: c.max_grad_norm,
    class_sampling_steps: c.class_sampling_steps ?? d.classSamplingSteps,
    class_guidance_scale: c.class_guidance_scale ?? d.classGuidanceScale,
    instance_prompt: `a ${c.token} ${classWord}`.trim(),
    class_prompt: classWord ? `a ${classWord}` : "",
    model_scale: scale,
  };
}

/** One example of a micro-batch: which image, and its loss weight. */
export interface PlannedExample {
  kind: "instance" | "class";
  /** Index among the instance images or among the class images. */
  index: number;
  weight: number;
}

/**
 * The examples of one micro-batch from its dataset indices (diffusers' DreamBoothDataset + collate): item k is
 * instance image k mod N_inst and, with prior preservation (`classCount` > 0), class image k mod N_class;
 * instances first, then classes. The trainer averages `weight x MSE` over the whole batch, so with prior
 * preservation instance examples weigh 2 and class examples 2 lambda: the loss is exactly
 * `mean MSE(instance) + lambda * mean MSE(class)`.
 *
 * @example
 * ```ts
 * priorPreservationBatch([7], 5, 100, 0.5);
 * // [{ kind: "instance", index: 2, weight: 2 }, { kind: "class", index: 7, weight: 1 }]
 * ```
 */
export function priorPreservationBatch(
  indices: readonly number[],
  instanceCount: number,
  classCount: number,
  priorLossWeight: number,
): PlannedExample[] {
  if (!(Number.isInteger(instanceCount) && instanceCount >= 1)) {
    throw new JobInputError(`instanceCount must be a positive integer, got ${instanceCount}`);
  }
  if (!(Number.isInteger(classCount) && classCount >= 0)) {
    throw new JobInputError(`classCount must be a non-negative integer, got ${classCount}`);
  }
  const prior = classCount > 0;
  const instances = indices.map((k): PlannedExample => ({
    kind: "instance",
    index: k % instanceCount,
    weight: prior ? 2 : 1,
  }));
  if (!prior) return instances;
  return [
    ...instances,
    ...indices.map((k): PlannedExample => ({
      kind: "class",
      index: k % classCount,
      weight: 2 * priorLossWeight,
    })),
  ];
}

/** `out` gets the LoRA file or the full model, plus `checkpoints/`. */
export interface DreamBoothOptions extends MethodRunOptions {
  /** Folder of instance images, or loaded images (a caption, when an image has one, replaces the prompt). */
  images: string | TrainingImage[];
  config: DreamBoothConfigInput;
}

export interface DreamBoothResult {
  config: ResolvedDreamBoothConfig;
  losses: number[];
  /** Denoising loss over the instance images with fixed noise and timesteps, before and after training. */
  evalLoss: { before: number; after: number };
  /** Files written: the LoRA file, or the model folder. */
  outputs: string[];
  trainedParameters: number;
  resumedFrom: number | null;
  /** The class-image cache folder (null without prior preservation) and this run's hits and misses. */
  classImages: { dir: string | null; generated: number; reused: number };
}

/** Latents above this many variants are dropped oldest first (random crops of large images multiply them). */
const LATENT_CACHE_ENTRIES = 4096;

export async function dreamBooth(runner: EngineRunner, o: DreamBoothOptions): Promise<DreamBoothResult> {
  DreamBoothConfig.strict().parse(o.config); // field errors before any loading
  if (o.checkpointEvery !== undefined && !(Number.isInteger(o.checkpointEvery) && o.checkpointEvery >= 1)) {
    throw new JobInputError(`checkpointEvery must be a positive integer, got ${o.checkpointEvery}`);
  }
  const loaded = typeof o.images === "string" ? await loadImageFolder(o.images) : o.images;
  if (!loaded.length) throw new JobInputError("DreamBooth needs at least one instance image, got none");
  const folder = await loadModelFolder(o.model);
  const cfg = resolveDreamBoothConfig(o.config, baseModelFacts(folder));
  const log = o.onLog ?? (() => {});
  const R = cfg.resolution;
  const images = loaded.map((t) => ({ ...t, image: resizeShorterSide(t.image, R) }));
  const nInstance = images.length;
  const nClass = cfg.with_prior_preservation ? cfg.num_class_images : 0;
  const perStep = cfg.batch_size * (nClass ? 2 : 1);

  let classCache: ClassImageCache | null = null;
  let encoder: Awaited<ReturnType<EngineRunner["createSession"]>> | null = null;
  let trainer: DiffusionTrainer | null = null;
  try {
    if (nClass) {
      classCache = await ClassImageCache.open(runner, {
        cacheDir: o.cacheDir ?? o.out,
        model: folder,
        prompt: cfg.class_prompt,
        sampling: { steps: cfg.class_sampling_steps, guidanceScale: cfg.class_guidance_scale },
      });
      const cached = (await classCache.cachedIndices()).filter((i) => i < nClass).length;
      log(
        `prior preservation: ${nClass} class images of "${cfg.class_prompt}" (${cached} cached, the rest made ` +
          `as batches need them) in ${classCache.dir}`,
      );
    }
    const classImages = new Map<number, Promise<RgbImage>>();
    const classImage = (j: number) => {
      let p = classImages.get(j);
      if (!p) {
        p = classCache!.image(j).then((img) => resizeShorterSide(img, R));
        p.catch(() => classImages.delete(j));
        classImages.set(j, p);
      }
      return p;
    };

    // VAE posterior per (image, crop/flip variant), encoded once: instance i is key i, class j is key N_inst + j.
    const encGraph = vaeEncoderGraph(folder);
    encoder = await runner.createSession(encGraph.toBytes(), { inputs: encGraph.inputs });
    const enc = encoder;
    const sf = folder.vaeConfig.scaling_factor;
    const cache = new LatentCache(async (key: number, v: CropVariant) => {
      const img = key < nInstance ? images[key].image : await classImage(key - nInstance);
      return await scaledPosterior(enc, applyVariant(img, v, R), sf);
    }, LATENT_CACHE_ENTRIES);

    trainer = await DiffusionTrainer.create(runner, folder, {
      batch: perStep,
      lora: cfg.mode === "lora"
        ? {
          targets: DEFAULT_LORA_TARGETS,
          rank: cfg.rank,
          alpha: cfg.alpha,
          seed: cfg.seed,
          init: "gaussian",
        }
        : undefined,
      unetTrainable: cfg.mode === "full" ? () => true : undefined,
      textEncoder: !cfg.train_text_encoder
        ? undefined
        : cfg.mode === "full"
        ? { trainable: () => true }
        : { lora: { targets: TEXT_ENCODER_LORA_TARGETS } },
    });
    const tr = trainer;

    const example = async (p: PlannedExample, rng: Rng): Promise<TrainingExample> => {
      const img = p.kind === "instance" ? images[p.index].image : await classImage(p.index);
      const v = chooseVariant(img.width, img.height, {
        resolution: R,
        centerCrop: cfg.center_crop,
        randomFlip: cfg.random_flip,
      }, rng);
      return {
        ...unpackPosterior(await cache.get(p.kind === "instance" ? p.index : nInstance + p.index, v)),
        caption: p.kind === "instance" ? images[p.index].caption ?? cfg.instance_prompt : cfg.class_prompt,
        weight: p.weight,
      };
    };
    // Instance images only, center crop, fixed noise and timesteps: the same draws before and after training.
    const evaluate = async () => {
      let sum = 0, runs = 0;
      for (let start = 0; start < nInstance; start += perStep) {
        const examples: TrainingExample[] = [];
        for (let k = 0; k < perStep; k++) {
          const i = (start + k) % nInstance;
          const img = images[i].image;
          const packed = await cache.get(i, chooseVariant(img.width, img.height, { resolution: R }));
          examples.push({
            latent: unpackPosterior(packed).latent,
            caption: images[i].caption ?? cfg.instance_prompt,
          });
        }
        sum += (await tr.computeGradients(examples, Rng.derive(cfg.seed, 0xe7a1, start))).loss;
        runs++;
      }
      return sum / runs;
    };

    const before = await evaluate();
    const res = await runTraining({
      params: tr.params(),
      datasetSize: nClass ? Math.max(nInstance, nClass) : nInstance,
      steps: cfg.steps,
      batchSize: cfg.batch_size,
      seed: cfg.seed,
      optimizer: { lr: cfg.learning_rate, betas: [0.9, 0.999], weightDecay: 1e-2, eps: 1e-8 },
      lrSchedule: cfg.lr_warmup_steps > 0
        ? { name: "constant_with_warmup", warmupSteps: cfg.lr_warmup_steps }
        : { name: "constant" },
      maxGradNorm: cfg.max_grad_norm,
      ...runLoopOptions(o, "dreambooth", cfg),
      gradients: async (mb) => {
        const plan = priorPreservationBatch(mb.indices, nInstance, nClass, cfg.prior_loss_weight);
        const examples: TrainingExample[] = [];
        for (const p of plan) examples.push(await example(p, mb.rng));
        return await tr.computeGradients(examples, mb.rng);
      },
    });
    await Deno.mkdir(o.out, { recursive: true });
    const outputs = cfg.mode === "lora"
      ? [await writeLora(o, cfg, tr)]
      : [await writeFullModel(o, cfg, folder, tr)];
    const after = await evaluate();
    if (classCache) {
      log(`class images: ${classCache.generated} generated, ${classCache.reused} read from the cache`);
    }
    return {
      config: cfg,
      losses: res.losses,
      evalLoss: { before, after },
      outputs,
      trainedParameters: tr.trainedParameterCount(),
      resumedFrom: res.resumedFrom,
      classImages: {
        dir: classCache?.dir ?? null,
        generated: classCache?.generated ?? 0,
        reused: classCache?.reused ?? 0,
      },
    };
  } finally {
    await trainer?.release();
    await encoder?.release();
    await classCache?.release();
  }
}

/** What the adapter's `info` metadata says about the run. */
function runInfo(o: DreamBoothOptions, cfg: ResolvedDreamBoothConfig): Record<string, unknown> {
  return {
    method: "dreambooth",
    token: cfg.token,
    class_word: cfg.class_word,
    prompt: cfg.instance_prompt,
    instance_prompt: cfg.instance_prompt,
    class_prompt: cfg.class_prompt,
    base_model: o.model,
    steps: cfg.steps,
    seed: cfg.seed,
    training_config: cfg,
  };
}

/** `pytorch_lora_weights.safetensors` with diffusers' keys (`unet.<module>.lora.down.weight` / `.up.weight`). */
async function writeLora(
  o: DreamBoothOptions,
  cfg: ResolvedDreamBoothConfig,
  tr: DiffusionTrainer,
): Promise<string> {
  const byName = new Map(tr.trained.map((t) => [t.name, t]));
  const tensors: Record<string, TensorData> = {};
  for (const t of tr.trained) {
    const path = t.name.match(/^lora\.(.+)\.down$/)?.[1];
    if (!path) continue;
    const up = byName.get(loraInputNames(path).up)!;
    const key = loraKeyPrefix(path) + path;
    tensors[`${key}.lora.down.weight`] = { dtype: "F32", shape: t.shape, data: t.data };
    tensors[`${key}.lora.up.weight`] = { dtype: "F32", shape: up.shape, data: up.data };
  }
  const name = o.out.split("/").filter(Boolean).pop() ?? "dreambooth";
  const path = `${o.out}/${LORA_FILE_NAME}`;
  await Deno.writeFile(
    path,
    writeSafetensors(tensors, {
      format: "pt",
      lora_rank: String(cfg.rank),
      lora_alpha: String(cfg.alpha),
      info: JSON.stringify({ name, ...runInfo(o, cfg) }),
    }),
  );
  return path;
}

/** A base file's tensors with the trained ones (`prefix + name`) replacing theirs; the rest copied as stored. */
function mergedWeights(
  base: SafetensorsFile,
  trained: { name: string; shape: number[]; data: Float32Array }[],
  prefix: string,
) {
  const out: Record<string, TensorData> = {};
  for (const n of base.names()) {
    const e = base.entry(n);
    out[n] = { dtype: e.dtype, shape: e.shape, data: base.bytes(n) };
  }
  for (const t of trained) {
    const n = prefix + t.name;
    if (!base.has(n)) throw new Error(`trained tensor "${n}" is not in ${base.source}`);
    out[n] = { dtype: "F32", shape: t.shape, data: t.data };
  }
  return out;
}

/** The base folder with the trained UNet (and text encoder), plus `dreambooth.json` describing the run. */
async function writeFullModel(
  o: DreamBoothOptions,
  cfg: ResolvedDreamBoothConfig,
  folder: ModelFolder,
  tr: DiffusionTrainer,
): Promise<string> {
  const replaced = (rel: string) =>
    /^unet\/[^/]*\.safetensors$/.test(rel) ||
    (cfg.train_text_encoder && /^text_encoder\/[^/]*\.safetensors$/.test(rel));
  await copyFolder(
    o.model,
    o.out,
    (name, rel) => !name.startsWith(".") && !replaced(rel) && !isOutputOwned(rel),
  );
  const unet = tr.trained.filter((t) => t.kind === "unet");
  await Deno.writeFile(
    `${o.out}/unet/diffusion_pytorch_model.safetensors`,
    writeSafetensors(mergedWeights(folder.weights.unet, unet, ""), { format: "pt" }),
  );
  if (cfg.train_text_encoder) {
    const te = tr.trained.filter((t) => t.kind === "text_encoder");
    await Deno.writeFile(
      `${o.out}/text_encoder/model.safetensors`,
      writeSafetensors(mergedWeights(folder.weights.text_encoder, te, textEncoderPrefix(folder)), {
        format: "pt",
      }),
    );
  }
  await Deno.writeTextFile(`${o.out}/dreambooth.json`, JSON.stringify(runInfo(o, cfg), null, 2) + "\n");
  return o.out;
}

/** Folders of a run that a base model folder might hold too (an earlier run written inside it). */
function isOutputOwned(rel: string): boolean {
  return rel === "checkpoints" || rel === "class_images" || rel === "dreambooth.json";
}

/** A DreamBooth LoRA file ready for the pipeline, with what it was trained for. */
export interface DreamBoothLora {
  lora: LoraWeights;
  token: string;
  classWord: string;
  instancePrompt: string;
  /** The run's resolved settings, when the file has them. */
  config: Partial<ResolvedDreamBoothConfig>;
}

/**
 * Reads a DreamBooth LoRA file (diffusers or PEFT keys) for inference: pass `lora` with a scale in
 * `generate({ adapters: [{ lora, scale }] })` and use `token` in the prompt.
 *
 * @example
 * ```ts
 * const { lora, instancePrompt } = loadDreamBoothLora(bytes, "rex.safetensors");
 * await pipe.generate({ prompt: instancePrompt, adapters: [{ lora, scale: 0.8 }] });
 * ```
 */
export function loadDreamBoothLora(bytes: Uint8Array, source: string): DreamBoothLora {
  const a = decodeLora(bytes, source);
  const info = a.info ?? {};
  const str = (k: string, d: string) => typeof info[k] === "string" ? info[k] as string : d;
  const token = str("token", "sks");
  const classWord = str("class_word", "");
  return {
    lora: toLoraWeights(a),
    token,
    classWord,
    instancePrompt: str("instance_prompt", `a ${token} ${classWord}`.trim()),
    config: (info.training_config ?? {}) as Partial<ResolvedDreamBoothConfig>,
  };
}
