/**
 * The worker protocol: how GPU workers talk to the edge (`/internal/workers/*`, bearer worker token).
 * Workers only ever speak HTTP to the edge — one trust boundary, unchanged when the edge runs on Cloudflare.
 *
 *   POST /internal/workers/register   RegisterRequest -> RegisterResponse
 *   POST /internal/workers/lease      LeaseRequest -> 200 LeasedJob | 204 (nothing to do)
 *   POST /internal/workers/jobs/{id}/heartbeat   HeartbeatRequest -> HeartbeatResponse (extends the lease)
 *   POST /internal/workers/jobs/{id}/complete    CompleteRequest -> 204
 *   POST /internal/workers/jobs/{id}/fail        FailRequest -> 204
 *   PUT  /internal/workers/blobs                 raw bytes (Content-Type) -> BlobRef (content-addressed)
 *   GET  /internal/workers/blobs/{sha256}        -> raw bytes
 *
 * A job whose lease expires (worker died) is leased again; its `checkpoint` blob (uploaded with heartbeats)
 * lets the next worker resume instead of restarting.
 */
import { z } from "zod";

export const JobKind = z.enum(["prediction", "training", "merge"]);
export type JobKind = z.infer<typeof JobKind>;

export const ExecutionProviderName = z.enum(["cpu", "cuda", "webgpu"]);

export const RegisterRequest = z.object({
  name: z.string().min(1).max(100),
  /** Base model ids this worker serves (folder names under its MODELS_DIR). */
  models: z.array(z.string()).min(1),
  kinds: z.array(JobKind).min(1),
  executionProvider: ExecutionProviderName,
}).strict();
export type RegisterRequest = z.infer<typeof RegisterRequest>;

export const RegisterResponse = z.object({ workerId: z.string(), leaseSeconds: z.number().int().positive() });
export type RegisterResponse = z.infer<typeof RegisterResponse>;

export const LeaseRequest = z.object({ workerId: z.string() }).strict();
export type LeaseRequest = z.infer<typeof LeaseRequest>;

export const BlobRef = z.object({
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  size: z.number().int().nonnegative(),
});
export type BlobRef = z.infer<typeof BlobRef>;

/** A leased job: everything the worker needs, inputs resolved to blob references. */
export const LeasedJob = z.object({
  id: z.string(),
  kind: JobKind,
  /** Lease token: must accompany heartbeat/complete/fail (a stale worker's calls are refused with 409). */
  leaseId: z.string(),
  leaseSeconds: z.number().int().positive(),
  attempt: z.number().int().positive(),
  baseModel: z.string(),
  /** The method (trainings: dreambooth, custom_diffusion, ...; merges: linear, ...). */
  method: z.string().optional(),
  /**
   * The validated public input (API.md field names, defaults filled), where every file or adapter reference
   * is a name in `blobs`:
   * - trainings: `images` is a list of names (an image file's id, or `<zip id>/<entry>.png` for each image of
   *   a zip), `captions` maps names to their `.txt` captions; `regularization_images`, `concepts[].images`
   *   and `pairs[].low/high` likewise; `destination` is the adapter's name; cidm: `library_adapter` names the
   *   library's current weights (null on first use).
   * - predictions: `prompt` has `<adapter-name>` references replaced by the adapter's trigger phrase
   *   (`token class_word`); `adapters`/`sliders` are `{id, name, kind, method, token, class_word, scale}` with
   *   the weights in `blobs[id]`; `regions[].adapters` keep their ids (described in `region_adapters`);
   *   `image`/`reference_image` are names in `blobs`.
   * - merges: `adapters` are `{id, ..., weight}`, weights in `blobs[id]`.
   * Outputs: images (predictions, `image/png`) or one `.safetensors` adapter (trainings, merges).
   */
  input: z.record(z.string(), z.unknown()),
  /** Blobs by the names the input uses (uploaded images, adapter weights). */
  blobs: z.record(z.string(), BlobRef),
  /** Last checkpoint a previous attempt uploaded, to resume from. */
  checkpoint: BlobRef.nullable(),
});
export type LeasedJob = z.infer<typeof LeasedJob>;

export const Progress = z.object({
  step: z.number().int().nonnegative(),
  total: z.number().int().positive(),
  loss: z.number().optional(),
  eta_s: z.number().optional(),
});

export const HeartbeatRequest = z.object({
  workerId: z.string(),
  leaseId: z.string(),
  progress: Progress.optional(),
  /** Small PNG, base64 (a preview of the current image). */
  preview: z.string().max(200_000).optional(),
  logs: z.array(z.string().max(2000)).max(100).optional(),
  /** A checkpoint blob already uploaded with PUT /blobs. */
  checkpoint: BlobRef.optional(),
}).strict();
export type HeartbeatRequest = z.infer<typeof HeartbeatRequest>;

/** `cancel: true` tells the worker to stop the job (the user canceled it). */
export const HeartbeatResponse = z.object({ cancel: z.boolean(), leaseSeconds: z.number().int().positive() });
export type HeartbeatResponse = z.infer<typeof HeartbeatResponse>;

export const CompleteRequest = z.object({
  workerId: z.string(),
  leaseId: z.string(),
  /** Output blobs: images (predictions) or an adapter file (trainings, merges). */
  outputs: z.array(z.object({ blob: BlobRef, contentType: z.string(), name: z.string() })),
  metrics: z.record(z.string(), z.number()).optional(),
}).strict();
export type CompleteRequest = z.infer<typeof CompleteRequest>;

export const FailRequest = z.object({
  workerId: z.string(),
  leaseId: z.string(),
  error: z.string().max(4000),
  /** false for errors that would fail again (bad input): no retry, refund at once. */
  retryable: z.boolean(),
}).strict();
export type FailRequest = z.infer<typeof FailRequest>;
