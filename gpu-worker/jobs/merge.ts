/**
 * Merge jobs (`POST /v1/merges`): the leased adapters (`MergeWork`) go to the merge method's run in the
 * worker's registry (`methods/registry.ts`; today `custom_diffusion`, the paper's closed-form merge), which
 * returns the merged adapter file and its descriptor.
 *
 * @example
 * ```ts
 * const { outputs, metrics, adapter } = await merge(ctx); // ctx.job.kind === "merge", method "custom_diffusion"
 * ```
 */
import type { LeasedMerge } from "../../shared/worker_protocol.ts";
import { NotServedError } from "../input_error.ts";
import { MERGE_RUNS, servedMergeMethods } from "../methods/registry.ts";
import type { JobContext, JobResult } from "./job.ts";

/** A merge method this worker does not run, as the job fails with it. */
export function mergeNotServed(method: string): NotServedError {
  return new NotServedError(
    `merge method "${method}" is not served by this worker (served: ${servedMergeMethods().join(", ")})`,
  );
}

export async function merge(ctx: JobContext<LeasedMerge>): Promise<JobResult> {
  const run = MERGE_RUNS[ctx.job.method];
  if (!run) throw mergeNotServed(ctx.job.method);
  return await run(ctx);
}
