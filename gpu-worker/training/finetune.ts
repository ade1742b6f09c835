/**
 * Fine-tuning a base model on a folder of images with one prompt (or per-image captions): LoRA on the
 * attention projections, or full fine-tuning of the UNet. Images are transformed as diffusers' training
 * scripts do, encoded once per crop/flip variant, and trained with the denoising loss; checkpoints allow
 * resuming; the result is a LoRA file (`pytorch_lora_weights.safetensors`) or a full model folder.
 * Methods (DreamBooth, Custom Diffusion, ...) build on the same pieces.
 *
 * @example
 * ```ts
 * await fineTune(runner, { model: "models/tiny-shapes", images: "photos/", prompt: "a sks circle",
 *   method: "lora", steps: 100, out: "out/rex" });
 * ```
 */
import type { EngineRunner } from "../ort/runner.ts";
import { DEFAULT_LORA_TARGETS, loadModelFolder, vaeEncoderGraph } from "../models/model_folder.ts";
import { loraInputNames } from "../models/layers.ts";
import { writeSafetensors } from "../models/safetensors.ts";
import { DiffusionTrainer, type TrainingExample } from "./diffusion_trainer.ts";
import {
  applyVariant,
  chooseVariant,
  type CropVariant,
  LatentCache,
  loadImageFolder,
  resizeShorterSide,
  type TrainingImage,
} from "./data.ts";
import { type ProgressEvent, runTraining } from "./loop.ts";
import { scaledPosterior, unpackPosterior } from "./posterior.ts";
import { encodeLora, LORA_FILE_NAME, type LoraAdapter } from "../adapters/lora.ts";
import { Rng } from "../random.ts";

export interface FineTuneOptions {
  /** Base model folder (diffusers layout). */
  model: string;
  /** Folder of images (png/jpeg, optional `.txt` captions), or loaded images. */
  images: string | TrainingImage[];
  /** Caption for images without their own. */
  prompt: string;
  method: "lora" | "full";
  steps: number;
  learningRate?: number;
  rank?: number;
  alpha?: number;
  batchSize?: number;
  randomFlip?: boolean;
  seed?: number;
  /** Output folder: the adapter file or the full model, plus `checkpoints/`. */
  out: string;
  checkpointEvery?: number;
  resume?: boolean;
  onProgress?: (e: ProgressEvent) => void;
  signal?: AbortSignal;
}

export interface FineTuneResult {
  losses: number[];
  /**
   * Denoising loss over the training images with fixed noise and timesteps, before and after training
   * (a validation figure that does not depend on the run's random draws).
   */
  evalLoss: { before: number; after: number };
  /** Files written. */
  outputs: string[];
  trainedParameters: number;
}

/** Validates options up front, naming the field, what was expected and what came. */
function check(o: FineTuneOptions) {
  const int = (k: string, v: number | undefined, lo: number, hi: number) => {
    if (v !== undefined && !(Number.isInteger(v) && v >= lo && v <= hi)) {
      throw new RangeError(`${k} must be an integer in ${lo}..${hi}, got ${v}`);
    }
  };
  if (o.method !== "lora" && o.method !== "full") {
    throw new RangeError(`method must be "lora" or "full", got "${o.method}"`);
  }
  int("steps", o.steps, 1, 1_000_000);
  int("rank", o.rank, 1, 1024);
  int("batchSize", o.batchSize, 1, 256);
  if (o.learningRate !== undefined && !(o.learningRate > 0 && o.learningRate < 1)) {
    throw new RangeError(`learningRate must be in (0, 1), got ${o.learningRate}`);
  }
}

export async function fineTune(runner: EngineRunner, o: FineTuneOptions): Promise<FineTuneResult> {
  check(o);
  const folder = await loadModelFolder(o.model);
  const loaded = typeof o.images === "string" ? await loadImageFolder(o.images) : o.images;
  if (!loaded.length) {
    throw new RangeError(`no training images${typeof o.images === "string" ? ` in ${o.images}` : ""}`);
  }
  const resolution = folder.unetConfig.sample_size * folder.vaeScaleFactor;
  // diffusers' Resize(resolution) first (shorter side to the model's resolution), once per image; crops and
  // flips are then taken from the resized image.
  const images = loaded.map((t) => ({ ...t, image: resizeShorterSide(t.image, resolution) }));
  const batch = o.batchSize ?? 1;
  const rank = o.rank ?? 4;
  const seed = o.seed ?? 0;

  // VAE posterior per crop/flip variant, encoded once.
  const encGraph = vaeEncoderGraph(folder);
  const encoder = await runner.createSession(encGraph.toBytes(), { inputs: encGraph.inputs });
  const sf = folder.vaeConfig.scaling_factor;
  const cache = new LatentCache((index: number, v: CropVariant) =>
    scaledPosterior(encoder, applyVariant(images[index].image, v, resolution), sf)
  );

  const trainer = await DiffusionTrainer.create(runner, folder, {
    batch,
    lora: o.method === "lora"
      ? { targets: DEFAULT_LORA_TARGETS, rank, alpha: o.alpha ?? rank, seed }
      : undefined,
    unetTrainable: o.method === "full" ? () => true : undefined,
  });
  const example = async (i: number, rng: Rng): Promise<TrainingExample> => {
    const img = images[i].image;
    const v = chooseVariant(img.width, img.height, {
      resolution,
      centerCrop: true,
      randomFlip: o.randomFlip ?? true,
    }, rng);
    return { ...unpackPosterior(await cache.get(i, v)), caption: images[i].caption ?? o.prompt };
  };
  // Fixed noise, timesteps and latent samples: the same draws before and after training.
  const evaluate = async () => {
    let sum = 0, runs = 0;
    for (let start = 0; start < images.length; start += batch) {
      const rng = Rng.derive(seed, 0xe7a1, start);
      const examples = [];
      for (let k = 0; k < batch; k++) {
        const i = (start + k) % images.length;
        const v = chooseVariant(images[i].image.width, images[i].image.height, { resolution });
        examples.push({
          latent: unpackPosterior(await cache.get(i, v)).latent,
          caption: images[i].caption ?? o.prompt,
        });
      }
      sum += (await trainer.computeGradients(examples, rng)).loss;
      runs++;
    }
    return sum / runs;
  };
  try {
    const before = await evaluate();
    const res = await runTraining({
      params: trainer.params(),
      datasetSize: images.length,
      steps: o.steps,
      batchSize: batch,
      seed,
      optimizer: { lr: o.learningRate ?? (o.method === "lora" ? 1e-3 : 5e-5) },
      maxGradNorm: 1,
      checkpoint: o.checkpointEvery
        ? {
          dir: `${o.out}/checkpoints`,
          every: o.checkpointEvery,
          keep: 2,
          config: { method: o.method, rank },
        }
        : undefined,
      resume: o.resume,
      onProgress: o.onProgress,
      signal: o.signal,
      gradients: async (mb) => {
        const examples = [];
        for (const i of mb.indices) examples.push(await example(i, mb.rng));
        return await trainer.computeGradients(examples, mb.rng);
      },
    });
    await Deno.mkdir(o.out, { recursive: true });
    const outputs: string[] = [];
    if (o.method === "lora") {
      const modules: LoraAdapter["modules"] = new Map();
      const byName = new Map(trainer.trained.map((t) => [t.name, t]));
      for (const t of trainer.trained) {
        const path = t.name.match(/^lora\.(.+)\.down$/)?.[1];
        if (!path) continue;
        const up = byName.get(loraInputNames(path).up)!;
        modules.set(path, { down: t.data, up: up.data, inFeatures: t.shape[1], outFeatures: up.shape[0] });
      }
      const path = `${o.out}/${LORA_FILE_NAME}`;
      await Deno.writeFile(
        path,
        encodeLora({
          name: o.out.split("/").filter(Boolean).pop() ?? "lora",
          rank,
          alpha: o.alpha ?? rank,
          modules,
        }, {
          prompt: o.prompt,
          base_model: o.model,
          steps: o.steps,
          seed,
        }),
      );
      outputs.push(path);
    } else {
      // A full model folder: the base's files with the trained UNet.
      await copyFolder(
        o.model,
        o.out,
        (name, rel) => !name.startsWith(".") && rel !== "unet/diffusion_pytorch_model.safetensors",
      );
      const tensors: Parameters<typeof writeSafetensors>[0] = {};
      for (const t of trainer.trained) tensors[t.name] = { dtype: "F32", shape: t.shape, data: t.data };
      const path = `${o.out}/unet/diffusion_pytorch_model.safetensors`;
      await Deno.writeFile(path, writeSafetensors(tensors, { format: "pt" }));
      outputs.push(o.out);
    }
    const after = await evaluate();
    return {
      losses: res.losses,
      evalLoss: { before, after },
      outputs,
      trainedParameters: trainer.trainedParameterCount(),
    };
  } finally {
    await trainer.release();
    await encoder.release();
  }
}

/** Copies `from` into `to`; `keep` sees each entry's own name and its path relative to `from`. */
export async function copyFolder(
  from: string,
  to: string,
  keep: (name: string, relative: string) => boolean,
  prefix = "",
) {
  await Deno.mkdir(to, { recursive: true });
  for await (const e of Deno.readDir(from)) {
    const src = `${from}/${e.name}`, dst = `${to}/${e.name}`, rel = `${prefix}${e.name}`;
    if (!keep(e.name, rel)) continue;
    if (e.isDirectory) await copyFolder(src, dst, keep, `${rel}/`);
    else if (e.isFile) await Deno.copyFile(src, dst);
  }
}
