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
 * A leased job is typed by its kind and, for trainings, its method: its input is the schema the method
 * registry (`shared/methods.ts`) gives for it, so a worker parses it once (`LeasedJob`) and each handler gets
 * its own typed input. A finished training or merge reports what adapter it made (`AdapterDescriptor`).
 *
 * A job whose lease expires (worker died) is leased again; its `checkpoint` blob (uploaded with heartbeats)
 * lets the next worker resume instead of restarting.
 *
 * @example
 * ```ts
 * const envelope = LeaseEnvelope.parse(await res.json()); // ids first: a bad input can still be failed
 * const job = LeasedJob.parse(envelope); // typed: job.kind === "training" && job.method === "dreambooth" ...
 * ```
 */
import { z } from "zod";
import { BlobRef } from "./blob_store.ts";
import { AdapterDescriptor } from "./adapters.ts";
import {
  MergeMethod,
  PredictionFeature,
  TRAINING_METHOD_REGISTRY,
  TRAINING_METHODS,
  type TrainingMethod,
  TrainingMethod as TrainingMethodSchema,
  type TrainingWorkOf,
} from "./methods.ts";
import { PredictionWork } from "./prediction.ts";
import { MergeWork } from "./training.ts";

export { BlobRef };

export const JobKind = z.enum(["prediction", "training", "merge"]);
export type JobKind = z.infer<typeof JobKind>;

export const ExecutionProviderName = z.enum(["cpu", "cuda", "webgpu"]);

export const RegisterRequest = z.object({
  name: z.string().min(1).max(100),
  /** Base model ids this worker serves (folder names under its MODELS_DIR). */
  models: z.array(z.string()).min(1),
  kinds: z.array(JobKind).min(1),
  executionProvider: ExecutionProviderName,
  /** Training methods it runs (none when absent). */
  methods: z.array(TrainingMethodSchema).default([]),
  /** Merge methods it runs (none when absent). */
  merges: z.array(MergeMethod).default([]),
  /** Optional prediction features it serves (`shared/methods.ts`; none when absent: plain txt2img). */
  features: z.array(PredictionFeature).default([]),
}).strict();
export type RegisterRequest = z.infer<typeof RegisterRequest>;

export const RegisterResponse = z.object({ workerId: z.string(), leaseSeconds: z.number().int().positive() });
export type RegisterResponse = z.infer<typeof RegisterResponse>;

export const LeaseRequest = z.object({ workerId: z.string() }).strict();
export type LeaseRequest = z.infer<typeof LeaseRequest>;

/** What every leased job has besides its kind, method and input. */
const envelope = {
  id: z.string(),
  /** Lease token: must accompany heartbeat/complete/fail (a stale worker's calls are refused with 409). */
  leaseId: z.string(),
  leaseSeconds: z.number().int().positive(),
  attempt: z.number().int().positive(),
  baseModel: z.string(),
  /** Blobs by the names the input uses (uploaded images, adapter weights). */
  blobs: z.record(z.string(), BlobRef),
  /** Last checkpoint a previous attempt uploaded, to resume from. */
  checkpoint: BlobRef.nullable(),
};

/**
 * A leased job with its input not yet read: what a worker needs to heartbeat, complete or fail it. A worker
 * parses this first, then `LeasedJob`, so a job whose input is refused still fails by its lease.
 */
export const LeaseEnvelope = z.object({
  ...envelope,
  kind: JobKind,
  method: z.string().optional(),
  input: z.record(z.string(), z.unknown()),
});
export type LeaseEnvelope = z.infer<typeof LeaseEnvelope>;

/** A leased prediction: `input.prompt` routed, adapters and sliders described, images as blob names. */
export const LeasedPrediction = z.object({
  ...envelope,
  kind: z.literal("prediction"),
  method: z.undefined().optional(),
  input: PredictionWork,
});

const leasedTrainingOf = (method: TrainingMethod) =>
  z.object({
    ...envelope,
    kind: z.literal("training"),
    method: z.literal(method),
    input: TRAINING_METHOD_REGISTRY[method].work as z.ZodType,
  });

/** A leased training: its input is its method's `work` schema (`shared/methods/<method>.ts`). */
export const LeasedTraining = z.discriminatedUnion(
  "method",
  TRAINING_METHODS.map(leasedTrainingOf) as unknown as [ReturnType<typeof leasedTrainingOf>],
);

/** A leased merge: the adapters to merge, each with its weight. */
export const LeasedMerge = z.object({
  ...envelope,
  kind: z.literal("merge"),
  method: MergeMethod,
  input: MergeWork,
});

type Envelope = Omit<LeaseEnvelope, "kind" | "method" | "input">;
export type LeasedPrediction = z.infer<typeof LeasedPrediction>;
/** A leased training of method M (all methods when M is left out), its input typed by M's schema. */
export type LeasedTraining<M extends TrainingMethod = TrainingMethod> = {
  [K in M]: Envelope & { kind: "training"; method: K; input: TrainingWorkOf<K> };
}[M];
export type LeasedMerge = z.infer<typeof LeasedMerge>;
export type LeasedJob = LeasedPrediction | LeasedTraining | LeasedMerge;

/**
 * A leased job, typed by kind and method: the validated public input (API.md field names, defaults filled)
 * where every file or adapter reference is a name in `blobs`:
 * - trainings: the method's `work` schema: `images` is a list of names (an image file's id, or
 *   `<zip id>/<entry>.png` for each image of a zip), `captions` maps names to their `.txt` captions;
 *   `regularization_images`, `concepts[].images` and `pairs[].low/high` likewise; `destination` is the
 *   adapter's name; cidm: `library_adapter` names the library's current weights (null on first use).
 * - predictions: `PredictionWork`.
 * - merges: `MergeWork`.
 * Outputs: images (predictions, `image/png`) or one `.safetensors` adapter (trainings, merges).
 */
export const LeasedJob = z.discriminatedUnion("kind", [
  LeasedPrediction,
  LeasedTraining,
  LeasedMerge,
]) as unknown as z.ZodType<LeasedJob>;

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
  /** Trainings and merges (required for them): what the adapter file is; the edge records it as given. */
  adapter: AdapterDescriptor.optional(),
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
