/**
 * Port: the job broker. At-least-once delivery with leases (a visibility timeout), heartbeats that extend a
 * lease and carry progress, retries with exponential backoff, a dead-letter state after `maxAttempts`,
 * cancellation that reaches a running job (its next heartbeat sees `cancelRequested`), and lease ids so a
 * stale worker cannot complete a job that was leased again.
 *
 * Billing lives here too, on purpose: a job's credits are reserved, settled or refunded in the same atomic
 * write as the state change that causes it, so nothing is charged twice or refunded twice.
 * Implementations: memory (tests), Deno KV (embedded), a Durable Object (scale-out); all pass
 * `broker_contract.ts`.
 *
 * @example
 * ```ts
 * await broker.credit("tnt_1", 100, "welcome");
 * const r = await broker.enqueue({ id: "p_1", tenant: "tnt_1", kind: "prediction", baseModel: "tiny-shapes",
 *   method: null, request: {}, work: { input: {}, blobs: {} }, price: 20 });
 * const job = await broker.lease({ workerId: "w1", models: ["tiny-shapes"], kinds: ["prediction"] });
 * await broker.complete(job!.id, job!.lease!.id, { outputs: [], result: {} }); // settles the 20 credits
 * ```
 */
import type { LedgerKind } from "./account.ts";
import type { BlobRef, JobKind } from "./worker_protocol.ts";

export type JobState = "queued" | "leased" | "succeeded" | "failed" | "canceled" | "dead";
export const TERMINAL_STATES: readonly JobState[] = ["succeeded", "failed", "canceled", "dead"];
export type BillingState = "reserved" | "settled" | "refunded";

export interface JobProgress {
  step: number;
  total: number;
  loss?: number;
  eta_s?: number;
}

export interface JobOutput {
  blob: BlobRef;
  contentType: string;
  name: string;
}

/** What the edge hands over when it accepts a job. */
export interface NewJob {
  id: string;
  tenant: string;
  kind: JobKind;
  baseModel: string;
  method: string | null;
  /** The accepted public request, rendered back to clients. */
  request: Record<string, unknown>;
  /** What a worker receives: the input with file ids as blob names, and those blobs. */
  work: { input: Record<string, unknown>; blobs: Record<string, BlobRef> };
  /** Credits reserved now, settled on success, refunded on failure or cancel. */
  price: number;
}

export interface JobRecord extends NewJob {
  state: JobState;
  billing: BillingState;
  /** Attempts started so far (1 after the first lease). */
  attempt: number;
  maxAttempts: number;
  /** When a queued job may be leased (later than now while backing off). */
  availableAt: number;
  /** The current or last lease; only `state: "leased"` makes it live. */
  lease: { id: string; workerId: string; expiresAt: number } | null;
  cancelRequested: boolean;
  progress: JobProgress | null;
  /** The tail of the job's log lines (bounded). */
  logs: string[];
  checkpoint: BlobRef | null;
  outputs: JobOutput[];
  /** The public output the edge made of the outputs (file ids, adapter id). */
  result: Record<string, unknown> | null;
  error: string | null;
  metrics: Record<string, number>;
  createdAt: number;
  startedAt: number | null;
  completedAt: number | null;
}

export interface LedgerRecord {
  id: string;
  tenant: string;
  kind: LedgerKind;
  amount: number;
  balance: number;
  jobId: string | null;
  operation: string | null;
  note: string;
  createdAt: number;
}

export type EnqueueResult =
  | { ok: true; job: JobRecord; created: boolean }
  | { ok: false; reason: "insufficient_credits"; balance: number; price: number };

export interface WorkerFilter {
  workerId: string;
  models: readonly string[];
  kinds: readonly JobKind[];
  /**
   * Whether the worker can run a job of its models and kinds (its training method, the prediction features it
   * uses); absent: every one. A job it cannot run stays queued for another worker instead of being leased
   * and failed. Brokers look this far down each queue for one it accepts.
   */
  serves?: (job: JobRecord) => boolean;
}

/** How many queued jobs of one base model and kind a lease looks at for one the worker serves. */
export const LEASE_SCAN = 64;

export interface HeartbeatUpdate {
  progress?: JobProgress;
  logs?: string[];
  checkpoint?: BlobRef;
}

export interface Completion {
  outputs: JobOutput[];
  result: Record<string, unknown>;
  metrics?: Record<string, number>;
}

export interface Failure {
  error: string;
  /** false: it would fail again (bad input); no retry. */
  retryable: boolean;
}

export interface Page<T> {
  items: T[];
  next: string | null;
}

/** A worker's call named a lease that is not the job's live lease (expired and re-leased, or finished). */
export class StaleLeaseError extends Error {
  constructor(readonly jobId: string, detail: string) {
    super(`job ${jobId}: ${detail}`);
    this.name = "StaleLeaseError";
  }
}

/**
 * The store stayed contended: a write kept losing to concurrent writers (of the same account or job) through
 * every retry, and nothing was written. Safe to retry later (the edge answers 503 with `Retry-After`).
 */
export class BrokerBusyError extends Error {
  constructor(detail: string, readonly retryAfterS = 1) {
    super(detail);
    this.name = "BrokerBusyError";
  }
}

export interface BrokerOptions {
  /** Milliseconds since the epoch; injectable so lease expiry is tested without sleeping. */
  now?: () => number;
  leaseMs?: number;
  maxAttempts?: number;
  /** Delay before attempt `attempt + 1` after attempt `attempt` failed. */
  backoffMs?: (attempt: number) => number;
  /**
   * `queuePosition` counts at most this many jobs ahead (default 100); a job further back has no known
   * position (null), so the cost of asking stays bounded however long the queue grows.
   */
  queuePositionLimit?: number;
}

export interface JobBroker {
  /**
   * Reserves `price` and queues the job, atomically; idempotent on `job.id` (an existing job is returned).
   * Throws `BrokerBusyError` (nothing written, nothing charged) when concurrent writes keep winning.
   */
  enqueue(job: NewJob): Promise<EnqueueResult>;
  get(id: string): Promise<JobRecord | null>;
  /** A tenant's jobs of one kind, newest first. */
  list(tenant: string, kind: JobKind, opts?: { limit?: number; cursor?: string }): Promise<Page<JobRecord>>;
  /**
   * Jobs ahead of a queued job for the same base model and kind; null when it is not queued, or when
   * `queuePositionLimit` or more are ahead (unknown: the count is bounded). Costs up to that many reads.
   */
  queuePosition(id: string): Promise<number | null>;
  /** The next job for this worker's base models and kinds, if any (expired leases are reclaimed first). */
  lease(worker: WorkerFilter): Promise<JobRecord | null>;
  /** Extends the lease; the record's `cancelRequested` tells the worker to stop. */
  heartbeat(id: string, leaseId: string, update: HeartbeatUpdate): Promise<JobRecord>;
  /** Succeeds and settles; repeating it with the same lease returns the finished job. */
  complete(id: string, leaseId: string, done: Completion): Promise<JobRecord>;
  /** Retries with backoff, or fails (dead letter after max attempts) and refunds. */
  fail(id: string, leaseId: string, failure: Failure): Promise<JobRecord>;
  /** A queued job is canceled and refunded now; a leased one at its worker's next call or lease expiry. */
  cancel(id: string): Promise<JobRecord | null>;
  /** Reclaims expired leases; returns the jobs it changed. */
  reap(): Promise<JobRecord[]>;
  credit(tenant: string, amount: number, note: string): Promise<number>;
  account(tenant: string): Promise<{ balance: number; reserved: number }>;
  ledger(tenant: string, opts?: { limit?: number; cursor?: string }): Promise<Page<LedgerRecord>>;
}
