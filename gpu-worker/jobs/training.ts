/**
 * Training jobs: `dreambooth` runs the DreamBooth method (`methods/dreambooth.ts`: LoRA on the job's uploaded
 * images with the instance prompt "a {token} {class_word}", prior preservation on class images the base model
 * generates, cached under the worker's work folder per base model and class prompt); `lora` is plain LoRA
 * fine-tuning (`fineTune`) on the images with that prompt. Progress and a log line go out with every step;
 * after each checkpoint save the checkpoint file is uploaded and sent with a heartbeat, so a job whose worker
 * dies is resumed by the next worker from there (`job.checkpoint`), not restarted. The output is the adapter
 * file (`pytorch_lora_weights.safetensors`), or for DreamBooth `mode: "full"` the whole fine-tuned UNet (and
 * text encoder) as one file (`adapters/full_checkpoint.ts`), which predictions then run as a model.
 *
 * @example
 * ```ts
 * const { outputs, metrics } = await train(ctx); // ctx.job.kind === "training", method "dreambooth"
 * metrics.resumed_from_step; // 0 on a fresh run
 * ```
 */
import { z } from "zod";
import { fineTune, type FineTuneResult } from "../training/finetune.ts";
import { decodeImage, type TrainingImage } from "../training/data.ts";
import {
  CheckpointError,
  checkpointFileName,
  decodeCheckpoint,
  latestCheckpoint,
} from "../training/checkpoint.ts";
import type { ProgressEvent } from "../training/loop.ts";
import { SafetensorsError } from "../models/safetensors.ts";
import { LORA_FILE_NAME } from "../adapters/lora.ts";
import { encodeFullCheckpoint, FULL_CHECKPOINT_FILE_NAME } from "../adapters/full_checkpoint.ts";
import { dreamBooth, DreamBoothConfig, type DreamBoothResult } from "../methods/dreambooth.ts";
import { customDiffusion, CustomDiffusionConfig } from "../methods/custom_diffusion.ts";
import type { BlobRef } from "../../shared/worker_protocol.ts";
import { type JobContext, type JobResult, resolveBlob } from "./job.ts";

/**
 * The `dreambooth` fields (API.md) as the method names them, with its defaults (METHODS.md, scaled to the base
 * model; prior preservation on when a class word is given), plus the images; fields of other layers (e.g.
 * `destination`) are dropped, unknown ones were refused by the edge.
 */
const DreamBoothInput = DreamBoothConfig.extend({
  images: z.union([z.string(), z.array(z.string()).min(1).max(1000)]),
  /** Captions of images by blob name (the edge takes them from the `.txt` entries of uploaded zips). */
  captions: z.record(z.string(), z.string()).default({}),
});

/**
 * The `custom_diffusion` fields: the method's settings plus one concept (`images`, `modifier_token`,
 * `class_word`) or several (`concepts`, joint training), and optional `regularization_images` (captioned by
 * `captions`, else by the class prompt).
 */
const ImageNames = z.union([z.string(), z.array(z.string()).min(1).max(1000)]);
const CustomDiffusionJobInput = CustomDiffusionConfig.extend({
  images: ImageNames.optional(),
  concepts: z.array(
    z.object({
      images: ImageNames,
      modifier_token: z.string(),
      class_word: z.string(),
      initializer_token: z.string().optional(),
    }).strict(),
  ).min(1).max(16).optional(),
  regularization_images: ImageNames.optional(),
  captions: z.record(z.string(), z.string()).default({}),
});

const SAFETENSORS = "application/vnd.safetensors";

/** The file name of a Custom Diffusion training's output (weights under diffusers' names + token rows). */
export const CUSTOM_DIFFUSION_OUTPUT_NAME = "custom_diffusion.safetensors";

/**
 * Methods this worker trains: `dreambooth` (the method), `custom_diffusion`, `lora` (plain LoRA fine-tuning).
 */
export const SERVED_TRAINING_METHODS = ["dreambooth", "custom_diffusion", "lora"] as const;

/** Checkpoints every tenth of the run, between 1 and 100 steps apart. */
export function defaultCheckpointEvery(steps: number): number {
  return Math.max(1, Math.min(100, Math.ceil(steps / 10)));
}

/**
 * Uploads checkpoints as the training loop writes them: `expect(step)` (called from progress, just before the
 * loop saves) waits for that file, uploads the newest one and heartbeats it; uploads run one at a time.
 */
class CheckpointUploader {
  private chain: Promise<void> = Promise.resolve();
  uploadedStep: number;

  constructor(private readonly dir: string, private readonly ctx: JobContext, fromStep: number) {
    this.uploadedStep = fromStep;
  }

  expect(step: number): void {
    this.chain = this.chain.then(() => this.upload(step)).catch((e) =>
      this.ctx.lease.log(`checkpoint upload failed: ${(e as Error).message}`)
    );
  }

  /** Uploads the newest checkpoint on disk if it was not sent yet, after the queued uploads. */
  async flush(): Promise<void> {
    this.expect(0);
    await this.chain;
  }

  /** Waits for the queued uploads. */
  async idle(): Promise<void> {
    await this.chain;
  }

  private async upload(step: number): Promise<void> {
    let path: string | null = null;
    // The loop saves right after reporting progress; give the atomic write its moment.
    for (let i = 0; i < 600; i++) {
      path = await latestCheckpoint(this.dir);
      if (path && stepOf(path) >= step) break;
      if (this.ctx.lease.signal.aborted && step > 0) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    if (!path || stepOf(path) <= this.uploadedStep) return;
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return; // rotated away: a newer one follows
      throw e;
    }
    const ref: BlobRef = await this.ctx.edge.putBlob(bytes, SAFETENSORS);
    this.uploadedStep = stepOf(path);
    this.ctx.lease.log(`checkpoint at step ${this.uploadedStep} uploaded (${ref.sha256.slice(0, 12)})`);
    await this.ctx.lease.checkpoint(ref);
  }
}

function stepOf(path: string): number {
  return Number(path.match(/checkpoint-(\d+)\.safetensors$/)?.[1] ?? -1);
}

/**
 * The training images from blobs: each entry of `input.images` names an image blob (an uploaded image's file id,
 * or `<zip id>/<entry>` for an image of an uploaded zip), captioned by `input.captions[name]` when it has one.
 */
async function loadImages(
  ctx: JobContext,
  images: string | string[],
  captions: Record<string, string>,
): Promise<TrainingImage[]> {
  const names = typeof images === "string" ? [images] : images;
  const out: TrainingImage[] = [];
  for (const [i, name] of names.entries()) {
    const field = `input.images[${i}]`;
    const bytes = await ctx.edge.getBlob(resolveBlob(ctx.job, name, field, "file"));
    out.push({
      path: name,
      stem: name,
      image: decodeImage(bytes, `${field} (${name})`),
      caption: captions[name] ?? null,
    });
  }
  return out;
}

/** Metrics of a run with prior preservation. */
function priorMetrics(r: DreamBoothResult): Record<string, number> {
  return {
    prior_preservation: 1,
    prior_loss_weight: r.config.prior_loss_weight,
    class_images_generated: r.classImages.generated,
    class_images_cached: r.classImages.reused,
  };
}

export async function train(ctx: JobContext): Promise<JobResult> {
  const { job, lease, edge, engine, settings } = ctx;
  if (!(SERVED_TRAINING_METHODS as readonly string[]).includes(job.method ?? "")) {
    throw new RangeError(
      `training method "${job.method}" is not served by this worker (served: ${
        SERVED_TRAINING_METHODS.join(", ")
      })`,
    );
  }
  if (job.method === "custom_diffusion") return await trainCustomDiffusion(ctx);
  const { images: imageNames, captions, ...config } = DreamBoothInput.parse(job.input);
  if (config.mode === "full" && job.method !== "dreambooth") {
    throw new RangeError(`input.mode "full" is a DreamBooth mode; method "${job.method}" trains LoRA only`);
  }
  const model = engine.modelDir(job.baseModel);
  const images = await loadImages(ctx, imageNames, captions);
  const prompt = `a ${config.token} ${config.class_word}`.trim();
  const captioned = images.filter((i) => i.caption !== null).length;
  const what = config.mode === "full"
    ? `every UNet weight${config.train_text_encoder ? " and the text encoder" : ""}`
    : `a rank-${config.rank} LoRA`;
  lease.log(
    `training ${what} on ${images.length} image(s) (${captioned} captioned), "${prompt}", ` +
      `${config.steps} steps (${job.method})`,
  );
  return await trainingRun(ctx, config.steps, async (run) => {
    let result: FineTuneResult;
    let prior: Record<string, number> = { prior_preservation: 0 };
    if (job.method === "dreambooth") {
      const r = await dreamBooth(engine.runner, {
        model,
        images,
        config,
        ...run.options,
        cacheDir: settings.workDir,
        onLog: (line) => lease.log(line),
      });
      result = r;
      if (r.config.with_prior_preservation) prior = priorMetrics(r);
    } else {
      result = await fineTune(engine.runner, {
        model,
        images,
        prompt,
        method: "lora",
        steps: config.steps,
        learningRate: config.learning_rate ?? 1e-4,
        rank: config.rank,
        batchSize: config.batch_size,
        seed: config.seed,
        ...run.options,
      });
    }
    if (config.mode === "full") {
      // The model folder the method wrote, as one stored file (unet.* and text_encoder.* tensors).
      const r = result as DreamBoothResult;
      const bytes = await encodeFullCheckpoint(run.options.out, {
        withTextEncoder: r.config.train_text_encoder,
        info: {
          method: "dreambooth",
          mode: "full",
          token: r.config.token,
          class_word: r.config.class_word,
          instance_prompt: r.config.instance_prompt,
          base_model: job.baseModel,
          training_config: r.config,
        },
      });
      const blob = await edge.putBlob(bytes, SAFETENSORS);
      return {
        output: { blob, contentType: SAFETENSORS, name: FULL_CHECKPOINT_FILE_NAME },
        result,
        metrics: { ...prior, weights_bytes: bytes.byteLength },
      };
    }
    const blob = await edge.putBlob(await Deno.readFile(`${run.options.out}/${LORA_FILE_NAME}`), SAFETENSORS);
    return { output: { blob, contentType: SAFETENSORS, name: LORA_FILE_NAME }, result, metrics: prior };
  });
}

/** What one training run reports, whatever the method. */
interface RunOutcome {
  output: JobResult["outputs"][number];
  result: { losses: number[]; evalLoss: { before: number; after: number }; trainedParameters: number };
  metrics: Record<string, number>;
}

/** The options a run takes from its frame (spread into the method's options). */
interface RunOptions {
  out: string;
  checkpointEvery: number;
  resume: boolean;
  signal: AbortSignal;
  onProgress: (e: ProgressEvent) => void;
}

/**
 * The frame every training job runs in: a fresh work folder (removed afterwards), the job's checkpoint restored
 * into it, progress and log lines on every step, checkpoints uploaded as the loop writes them (the last one
 * flushed when the worker stops), and the metrics all methods share.
 */
async function trainingRun(
  ctx: JobContext,
  steps: number,
  train: (run: { options: RunOptions }) => Promise<RunOutcome>,
): Promise<JobResult> {
  const { job, lease, settings } = ctx;
  const started = performance.now();
  const out = `${settings.workDir}/${job.id}`;
  await Deno.remove(out, { recursive: true }).catch(() => {});
  await Deno.mkdir(`${out}/checkpoints`, { recursive: true });
  try {
    const resumedFrom = await restoreCheckpoint(ctx, out);
    const every = settings.checkpointEvery ?? defaultCheckpointEvery(steps);
    const uploader = new CheckpointUploader(`${out}/checkpoints`, ctx, resumedFrom);
    let stepsRun = 0;
    let outcome: RunOutcome;
    try {
      outcome = await train({
        options: {
          out,
          checkpointEvery: every,
          resume: resumedFrom > 0,
          signal: lease.signal,
          onProgress: (e) => {
            stepsRun++;
            const eta = Number.isFinite(e.etaSeconds) ? Math.round(e.etaSeconds * 10) / 10 : undefined;
            lease.progress({ step: e.step, total: e.steps, loss: e.loss, eta_s: eta });
            lease.log(`step ${e.step}/${e.steps} loss ${e.loss.toFixed(4)}`);
            if (e.step % every === 0 && e.step < e.steps) uploader.expect(e.step);
          },
        },
      });
    } catch (e) {
      // A worker that stops hands the job back: the loop saved its last update, send it along.
      if (lease.stoppedBy === "stopping") await uploader.flush();
      throw e;
    }
    await uploader.idle();
    const { result } = outcome;
    return {
      outputs: [outcome.output],
      metrics: {
        steps,
        steps_run: stepsRun,
        resumed_from_step: resumedFrom,
        loss: result.losses[result.losses.length - 1],
        eval_loss_before: result.evalLoss.before,
        eval_loss_after: result.evalLoss.after,
        trained_parameters: result.trainedParameters,
        ...outcome.metrics,
        train_time: Math.round((performance.now() - started) / 10) / 100,
      },
    };
  } finally {
    await Deno.remove(out, { recursive: true }).catch(() => {});
  }
}

/** Restores the job's checkpoint (a worker died mid-run) into `<out>/checkpoints`; returns its step (0: none). */
async function restoreCheckpoint(ctx: JobContext, out: string): Promise<number> {
  const { job, lease, edge } = ctx;
  if (!job.checkpoint) return 0;
  const bytes = await edge.getBlob(job.checkpoint);
  try {
    const step = decodeCheckpoint(bytes, "job checkpoint").step;
    await Deno.writeFile(`${out}/checkpoints/${checkpointFileName(step)}`, bytes);
    lease.log(`attempt ${job.attempt}: resuming from the checkpoint at step ${step}`);
    return step;
  } catch (e) {
    if (!(e instanceof CheckpointError || e instanceof SafetensorsError)) throw e;
    lease.log(`attempt ${job.attempt}: checkpoint unusable (${e.message}); starting over`);
    return 0;
  }
}

/** Custom Diffusion: one concept or several (joint), output the adapter bundle. */
async function trainCustomDiffusion(ctx: JobContext): Promise<JobResult> {
  const { job, lease, edge, engine, settings } = ctx;
  const { images, concepts, regularization_images, captions, ...config } = CustomDiffusionJobInput.parse(
    job.input,
  );
  if (!images && !concepts) throw new RangeError("input.images or input.concepts is required");
  const regularization = regularization_images === undefined
    ? undefined
    : await loadImages(ctx, regularization_images, captions);
  const specs = concepts
    ? await Promise.all(concepts.map(async (k) => ({
      images: await loadImages(ctx, k.images, captions),
      modifier_token: k.modifier_token,
      class_word: k.class_word,
      initializer_token: k.initializer_token,
      regularization,
    })))
    : [{
      images: await loadImages(ctx, images!, captions),
      modifier_token: config.modifier_token ?? "<new1>",
      class_word: config.class_word ?? "",
      regularization,
    }];
  const steps = config.steps ?? (specs.length > 1 ? 500 : 250);
  return await trainingRun(ctx, steps, async (run) => {
    const r = await customDiffusion(engine.runner, {
      model: engine.modelDir(job.baseModel),
      concepts: specs,
      config: { ...config, steps },
      ...run.options,
      cacheDir: settings.workDir,
      onLog: (line) => lease.log(line),
    });
    const blob = await edge.putBlob(await Deno.readFile(r.adapterFile), SAFETENSORS);
    return {
      output: { blob, contentType: SAFETENSORS, name: CUSTOM_DIFFUSION_OUTPUT_NAME },
      result: r,
      metrics: {
        concepts: specs.length,
        prior_preservation: r.config.with_prior_preservation ? 1 : 0,
        class_images_generated: r.classImages.generated,
        class_images_cached: r.classImages.reused,
        weights_bytes: r.size.stored,
        weights_bytes_uncompressed: r.size.full,
      },
    };
  });
}
