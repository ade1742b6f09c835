/**
 * What a job handler (prediction, training, merge) is given and returns, how the inputs' file references
 * become blobs, and which errors are the input's fault (not retried: the same input would fail again).
 *
 * Blob naming in a leased job (agreed with the edge): an input field holds either a BlobRef itself
 * (`{sha256, size}`) or a file/adapter id that keys `job.blobs` — as `<id>`, `file:<id>` or `adapter:<id>` —
 * and an adapter entry may carry its own `blob`.
 *
 * @example
 * ```ts
 * const ref = resolveBlob(job, job.input.image, "input.image", "file");
 * const bytes = await ctx.edge.getBlob(ref);
 * ```
 */
import { ZodError } from "zod";
import type { AdapterDescriptor } from "../../shared/adapters.ts";
import { BlobRef, type CompleteRequest, type LeasedJob } from "../../shared/worker_protocol.ts";
import type { EdgeClient } from "./edge_client.ts";
import type { JobLease } from "./lease.ts";
import type { WorkerEngine } from "./engine.ts";
import { InputError, JobInputError } from "../input_error.ts";
import { ImageLoadError } from "../training/data.ts";
import { TrainingDivergedError } from "../training/loop.ts";
import { SafetensorsError } from "../models/safetensors.ts";
import { MergeError } from "../methods/custom_diffusion_merge.ts";

/** Tunables of the worker that shape how jobs run (not part of any request). */
export interface JobSettings {
  /** Preview every this many denoising steps (predictions), at most once per `previewIntervalMs`. */
  previewEvery: number;
  previewIntervalMs: number;
  /** Longest side of a preview, in pixels. */
  previewSize: number;
  /** Training checkpoint period in steps; default a tenth of the run (1..100). */
  checkpointEvery?: number;
  /** Scratch folder for training runs. */
  workDir: string;
}

/** A handler's context; `J` narrows the job to its kind (and method), input typed by the registry. */
export interface JobContext<J = LeasedJob> {
  job: J;
  lease: JobLease;
  edge: EdgeClient;
  engine: WorkerEngine;
  settings: JobSettings;
}

export interface JobResult {
  outputs: CompleteRequest["outputs"];
  metrics: Record<string, number>;
  /** Trainings and merges: what the adapter file is. */
  adapter?: AdapterDescriptor;
}

/**
 * Errors that the same job would hit again: the input's fault (`InputError` and its subclasses: bad weights,
 * checkpoints, adapters, what this worker does not serve; a leased input its schema refuses), unreadable
 * images or safetensors, divergence, unmergeable concepts. Built-in errors (`RangeError`, `TypeError`, ...)
 * are not among them: they may be our own bugs or the machine's, so the job is retried (and dead-lettered
 * after its attempts).
 */
export function isPermanentError(e: unknown): boolean {
  return e instanceof InputError || e instanceof ZodError || e instanceof ImageLoadError ||
    e instanceof SafetensorsError || e instanceof TrainingDivergedError || e instanceof MergeError;
}

/** A short message for `fail`: zod issues as `field: message`, others as their message. */
export function errorMessage(e: unknown): string {
  if (e instanceof ZodError) {
    return "invalid input: " + e.issues.map((i) => `${i.path.join(".") || "input"}: ${i.message}`).join("; ");
  }
  return e instanceof Error ? e.message : String(e);
}

/**
 * The blob an input value refers to. `field` names the value in errors; `prefix` is the kind of id
 * (`file`, `adapter`). A value with no blob in the job is a JobInputError (the edge resolves every reference).
 */
export function resolveBlob(
  job: Pick<LeasedJob, "id" | "blobs">,
  value: unknown,
  field: string,
  prefix: string,
): BlobRef {
  const direct = BlobRef.safeParse(value);
  if (direct.success) return direct.data;
  if (typeof value === "string") {
    const ref = job.blobs[value] ?? job.blobs[`${prefix}:${value}`];
    if (ref) return ref;
    throw new JobInputError(`${field}: no blob for ${prefix} "${value}" in job ${job.id}`);
  }
  throw new JobInputError(
    `${field}: expected a ${prefix} id or a blob reference, got ${JSON.stringify(value)}`,
  );
}
