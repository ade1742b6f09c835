/**
 * Training jobs: the leased input, already parsed with its method's schema (`shared/methods/<method>.ts`), goes
 * to the method's run in the worker's registry (`methods/registry.ts`: `dreambooth`, `custom_diffusion`),
 * which trains inside the shared frame (`training_run.ts`: progress and a log line with every step,
 * checkpoints uploaded with heartbeats so a job whose worker dies resumes on the next one). The output is the
 * adapter file (`pytorch_lora_weights.safetensors`; for DreamBooth `mode: "full"` the whole fine-tuned UNet,
 * and text encoder, as one file; Custom Diffusion's bundle) and the descriptor of the adapter it made.
 *
 * @example
 * ```ts
 * const { outputs, metrics, adapter } = await train(ctx); // ctx.job.kind === "training", method "dreambooth"
 * metrics.resumed_from_step; // 0 on a fresh run
 * ```
 */
import type { TrainingMethod } from "../../shared/methods.ts";
import type { LeasedTraining } from "../../shared/worker_protocol.ts";
import { NotServedError } from "../input_error.ts";
import { servedTrainingMethods, TRAINING_RUNS, type TrainingRun } from "../methods/registry.ts";
import type { JobContext, JobResult } from "./job.ts";

/** A training method this worker does not run, as the job fails with it. */
export function trainingNotServed(method: string): NotServedError {
  return new NotServedError(
    `training method "${method}" is not served by this worker (served: ${
      servedTrainingMethods().join(", ")
    })`,
  );
}

export async function train(ctx: JobContext<LeasedTraining>): Promise<JobResult> {
  const run = TRAINING_RUNS[ctx.job.method] as TrainingRun<TrainingMethod> | undefined;
  if (!run) throw trainingNotServed(ctx.job.method);
  return await run(ctx);
}
