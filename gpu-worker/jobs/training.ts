/**
 * Training jobs: DreamBooth as LoRA fine-tuning (`fineTune`, method "lora") on the job's uploaded images with
 * the instance prompt "a {token} {class_word}". Progress and a log line go out with every step; after each
 * checkpoint save the checkpoint file is uploaded and sent with a heartbeat, so a job whose worker dies is
 * resumed by the next worker from there (`job.checkpoint`), not restarted. The output is the adapter file
 * (`pytorch_lora_weights.safetensors`).
 *
 * @example
 * ```ts
 * const { outputs, metrics } = await train(ctx); // ctx.job.kind === "training", method "dreambooth"
 * metrics.resumed_from_step; // 0 on a fresh run
 * ```
 */
import { z } from "zod";
import { fineTune } from "../training/finetune.ts";
import { decodeImage, type TrainingImage } from "../training/data.ts";
import {
  CheckpointError,
  checkpointFileName,
  decodeCheckpoint,
  latestCheckpoint,
} from "../training/checkpoint.ts";
import { SafetensorsError } from "../models/safetensors.ts";
import { LORA_FILE_NAME } from "../adapters/lora.ts";
import type { BlobRef } from "../../shared/worker_protocol.ts";
import { type JobContext, type JobResult, resolveBlob } from "./job.ts";

/** `dreambooth` fields (API.md), defaults from METHODS.md; unknown fields were refused by the edge. */
const DreamBoothInput = z.object({
  images: z.union([z.string(), z.array(z.string()).min(1).max(1000)]),
  /** Captions of images by blob name (the edge takes them from the `.txt` entries of uploaded zips). */
  captions: z.record(z.string(), z.string()).default({}),
  steps: z.number().int().min(1).max(100_000).default(500),
  learning_rate: z.number().gt(0).lt(1).default(1e-4),
  batch_size: z.number().int().min(1).max(64).default(1),
  resolution: z.number().int().positive().optional(),
  seed: z.number().int().min(0).max(2 ** 53 - 1).default(0),
  token: z.string().min(1).max(100).default("sks"),
  class_word: z.string().max(100).default(""),
  mode: z.enum(["lora", "full"]).default("lora"),
  rank: z.number().int().min(1).max(1024).default(4),
  with_prior_preservation: z.boolean().default(false),
  train_text_encoder: z.boolean().default(false),
});

const SAFETENSORS = "application/vnd.safetensors";

/** Methods this worker trains, each mapped onto `fineTune`. */
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

export async function train(ctx: JobContext): Promise<JobResult> {
  const { job, lease, edge, engine, settings } = ctx;
  if (!(SERVED_TRAINING_METHODS as readonly string[]).includes(job.method ?? "")) {
    throw new RangeError(
      `training method "${job.method}" is not served by this worker (served: ${
        SERVED_TRAINING_METHODS.join(", ")
      })`,
    );
  }
  const input = DreamBoothInput.parse(job.input);
  if (input.mode !== "lora") {
    throw new RangeError(`input.mode "${input.mode}" is not served yet (served: lora)`);
  }
  if (input.with_prior_preservation) throw new RangeError("input.with_prior_preservation is not served yet");
  if (input.train_text_encoder) throw new RangeError("input.train_text_encoder is not served yet");
  const model = engine.modelDir(job.baseModel);
  if (input.resolution !== undefined) {
    const unet = JSON.parse(await Deno.readTextFile(`${model}/unet/config.json`));
    const vae = JSON.parse(await Deno.readTextFile(`${model}/vae/config.json`));
    const native = unet.sample_size * 2 ** ((vae.block_out_channels?.length ?? 4) - 1);
    if (input.resolution !== native) {
      throw new RangeError(`input.resolution ${input.resolution}: ${job.baseModel} trains at ${native}`);
    }
  }
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
    const images = await loadImages(ctx, input.images, input.captions);
    const prompt = `a ${input.token} ${input.class_word}`.trim();
    const every = settings.checkpointEvery ?? defaultCheckpointEvery(input.steps);
    const uploader = new CheckpointUploader(`${out}/checkpoints`, ctx, resumedFrom);
    let stepsRun = 0;
    const captioned = images.filter((i) => i.caption !== null).length;
    lease.log(
      `training a rank-${input.rank} LoRA on ${images.length} image(s) (${captioned} captioned), "${prompt}", ` +
        `${input.steps} steps`,
    );
    let result;
    try {
      result = await fineTune(engine.runner, {
        model,
        images,
        prompt,
        method: "lora",
        steps: input.steps,
        learningRate: input.learning_rate,
        rank: input.rank,
        batchSize: input.batch_size,
        seed: input.seed,
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
      });
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
        steps: input.steps,
        steps_run: stepsRun,
        resumed_from_step: resumedFrom,
        loss: losses[losses.length - 1],
        eval_loss_before: result.evalLoss.before,
        eval_loss_after: result.evalLoss.after,
        trained_parameters: result.trainedParameters,
        train_time: Math.round((performance.now() - started) / 10) / 100,
      },
    };
  } finally {
    await Deno.remove(out, { recursive: true }).catch(() => {});
  }
}
