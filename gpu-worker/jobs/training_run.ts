/**
 * The frame every training job runs in, whatever the method (the runs are the worker's method registry,
 * `methods/registry.ts`): a fresh work folder (removed afterwards), the job's checkpoint restored into it,
 * progress and log lines on every step, checkpoints uploaded as the loop writes them (the last one flushed
 * when the worker stops), the metrics all methods share, and the training images read from the job's blobs.
 *
 * @example
 * ```ts
 * const images = await loadImages(ctx, job.input.images, job.input.captions);
 * return await trainingRun(ctx, job.input.steps, async (run) => {
 *   const r = await myMethod(engine.runner, { model, images, ...run.options });
 *   return { output, result: r, metrics: {}, adapter: { kind: "concept", method: "my_method", tokens, class_word } };
 * });
 * ```
 */
import type { AdapterDescriptor } from "../../shared/adapters.ts";
import type { BlobRef } from "../../shared/worker_protocol.ts";
import { decodeImage, type TrainingImage } from "../training/data.ts";
import {
  CheckpointError,
  checkpointFileName,
  decodeCheckpoint,
  latestCheckpoint,
} from "../training/checkpoint.ts";
import type { ProgressEvent } from "../training/loop.ts";
import { SafetensorsError } from "../models/safetensors.ts";
import { type JobContext, type JobResult, resolveBlob } from "./job.ts";

/** The media type of adapter and checkpoint files. */
export const SAFETENSORS = "application/vnd.safetensors";

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
export async function loadImages(
  ctx: JobContext,
  images: readonly string[],
  captions: Record<string, string>,
  field = "input.images",
): Promise<TrainingImage[]> {
  const names = images;
  const out: TrainingImage[] = [];
  for (const [i, name] of names.entries()) {
    const at = `${field}[${i}]`;
    const bytes = await ctx.edge.getBlob(resolveBlob(ctx.job, name, at, "file"));
    out.push({
      path: name,
      stem: name,
      image: decodeImage(bytes, `${at} (${name})`),
      caption: captions[name] ?? null,
    });
  }
  return out;
}

/** What one training run reports, whatever the method: its output file, loss history, and what it made. */
export interface RunOutcome {
  output: JobResult["outputs"][number];
  result: { losses: number[]; evalLoss: { before: number; after: number }; trainedParameters: number };
  metrics: Record<string, number>;
  /** What the adapter is (the edge records it as given). */
  adapter: AdapterDescriptor;
}

/** The options a run takes from its frame (spread into the method's options). */
export interface RunOptions {
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
export async function trainingRun(
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
      adapter: outcome.adapter,
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
