/**
 * Training jobs: `dreambooth` runs the DreamBooth method (`methods/dreambooth.ts`: LoRA on the job's uploaded
 * images with the instance prompt "a {token} {class_word}", prior preservation on class images the base model
 * generates, cached under the worker's work folder per base model and class prompt); `lora` is plain LoRA
 * fine-tuning (`fineTune`) on the images with that prompt. Progress and a log line go out with every step;
 * after each checkpoint save the checkpoint file is uploaded and sent with a heartbeat, so a job whose worker
 * dies is resumed by the next worker from there (`job.checkpoint`), not restarted. The output is the adapter
 * file (`pytorch_lora_weights.safetensors`).
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
import { dreamBooth, DreamBoothConfig, type DreamBoothResult } from "../methods/dreambooth.ts";
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

const SAFETENSORS = "application/vnd.safetensors";

/** Methods this worker trains: `dreambooth` (the method), `lora` (plain LoRA fine-tuning). */
export const SERVED_TRAINING_METHODS = ["dreambooth", "lora"] as const;

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
  const { images: imageNames, captions, ...config } = DreamBoothInput.parse(job.input);
  if (config.mode !== "lora") {
    throw new RangeError(
      `input.mode "${config.mode}" is not served: a full fine-tune is a model, not an adapter (served: lora)`,
    );
  }
  const model = engine.modelDir(job.baseModel);
  const started = performance.now();
  const out = `${settings.workDir}/${job.id}`;
  await Deno.remove(out, { recursive: true }).catch(() => {});
  await Deno.mkdir(`${out}/checkpoints`, { recursive: true });
  try {
    let resumedFrom = 0;
    if (job.checkpoint) {
      const bytes = await edge.getBlob(job.checkpoint);
      try {
        resumedFrom = decodeCheckpoint(bytes, "job checkpoint").step;
        await Deno.writeFile(`${out}/checkpoints/${checkpointFileName(resumedFrom)}`, bytes);
        lease.log(`attempt ${job.attempt}: resuming from the checkpoint at step ${resumedFrom}`);
      } catch (e) {
        // A checkpoint we cannot read costs the steps it held, not the job.
        if (!(e instanceof CheckpointError || e instanceof SafetensorsError)) throw e;
        lease.log(`attempt ${job.attempt}: checkpoint unusable (${e.message}); starting over`);
      }
    }
    const images = await loadImages(ctx, imageNames, captions);
    const prompt = `a ${config.token} ${config.class_word}`.trim();
    const every = settings.checkpointEvery ?? defaultCheckpointEvery(config.steps);
    const uploader = new CheckpointUploader(`${out}/checkpoints`, ctx, resumedFrom);
    let stepsRun = 0;
    const captioned = images.filter((i) => i.caption !== null).length;
    lease.log(
      `training a rank-${config.rank} LoRA on ${images.length} image(s) (${captioned} captioned), "${prompt}", ` +
        `${config.steps} steps (${job.method})`,
    );
    const onProgress = (e: ProgressEvent) => {
      stepsRun++;
      const eta = Number.isFinite(e.etaSeconds) ? Math.round(e.etaSeconds * 10) / 10 : undefined;
      lease.progress({ step: e.step, total: e.steps, loss: e.loss, eta_s: eta });
      lease.log(`step ${e.step}/${e.steps} loss ${e.loss.toFixed(4)}`);
      if (e.step % every === 0 && e.step < e.steps) uploader.expect(e.step);
    };
    let result: FineTuneResult;
    let prior: Record<string, number> = { prior_preservation: 0 };
    try {
      if (job.method === "dreambooth") {
        const r = await dreamBooth(engine.runner, {
          model,
          images,
          config,
          out,
          cacheDir: settings.workDir,
          checkpointEvery: every,
          resume: resumedFrom > 0,
          signal: lease.signal,
          onProgress,
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
          out,
          checkpointEvery: every,
          resume: resumedFrom > 0,
          signal: lease.signal,
          onProgress,
        });
      }
    } catch (e) {
      // A worker that stops hands the job back: the loop saved its last update, send it along.
      if (lease.stoppedBy === "stopping") await uploader.flush();
      throw e;
    }
    await uploader.idle();
    const bytes = await Deno.readFile(`${out}/${LORA_FILE_NAME}`);
    const blob = await edge.putBlob(bytes, SAFETENSORS);
    const losses = result.losses;
    return {
      outputs: [{ blob, contentType: SAFETENSORS, name: LORA_FILE_NAME }],
      metrics: {
        steps: config.steps,
        steps_run: stepsRun,
        resumed_from_step: resumedFrom,
        loss: losses[losses.length - 1],
        eval_loss_before: result.evalLoss.before,
        eval_loss_after: result.evalLoss.after,
        trained_parameters: result.trainedParameters,
        ...prior,
        train_time: Math.round((performance.now() - started) / 10) / 100,
      },
    };
  } finally {
    await Deno.remove(out, { recursive: true }).catch(() => {});
  }
}
