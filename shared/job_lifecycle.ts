/**
 * The job state machine every broker implementation shares: pure functions from a record and the time to
 * the next record and the balance change it causes. Implementations only persist the result atomically.
 *
 *   queued --lease--> leased --complete--> succeeded (settle)
 *     ^                 |  \--fail(retryable, attempts left) / lease expired--> queued after backoff
 *     |                 |  \--fail(final) / attempts used up--> failed | dead (refund)
 *     +---cancel (queued: canceled + refund now; leased: at the worker's next call or lease expiry)
 *
 * @example
 * ```ts
 * const t = completeJob(job, job.lease!.id, { outputs: [], result: {} }, Date.now());
 * t.billing; // { kind: "settle", amount: 0 }
 * ```
 */
import type { LedgerKind } from "./account.ts";
import {
  type BrokerOptions,
  type Completion,
  type Failure,
  type HeartbeatUpdate,
  type JobRecord,
  type JobState,
  type NewJob,
  StaleLeaseError,
  TERMINAL_STATES,
  type WorkerFilter,
} from "./job_broker.ts";

export type ResolvedBrokerOptions = Required<BrokerOptions>;

export function resolveBrokerOptions(o: BrokerOptions = {}): ResolvedBrokerOptions {
  return {
    now: o.now ?? Date.now,
    leaseMs: o.leaseMs ?? 60_000,
    maxAttempts: o.maxAttempts ?? 3,
    backoffMs: o.backoffMs ?? ((attempt) => Math.min(2_000 * 2 ** (attempt - 1), 300_000)),
    queuePositionLimit: o.queuePositionLimit ?? 100,
  };
}

/** A state change and the balance change that goes with it (written in the same atomic operation). */
export interface Transition {
  job: JobRecord;
  billing?: { kind: LedgerKind; amount: number; note: string };
}

const MAX_LOG_CHARS = 16_000;

export function isTerminal(state: JobState): boolean {
  return TERMINAL_STATES.includes(state);
}

export function newJobRecord(job: NewJob, now: number, o: ResolvedBrokerOptions): JobRecord {
  return {
    ...job,
    state: "queued",
    billing: "reserved",
    attempt: 0,
    maxAttempts: o.maxAttempts,
    availableAt: now,
    lease: null,
    cancelRequested: false,
    progress: null,
    logs: [],
    checkpoint: null,
    outputs: [],
    result: null,
    error: null,
    metrics: {},
    createdAt: now,
    startedAt: null,
    completedAt: null,
  };
}

export function canLease(job: JobRecord, worker: WorkerFilter, now: number): boolean {
  return job.state === "queued" && job.availableAt <= now && worker.models.includes(job.baseModel) &&
    worker.kinds.includes(job.kind);
}

export function leaseJob(
  job: JobRecord,
  worker: WorkerFilter,
  now: number,
  o: ResolvedBrokerOptions,
): JobRecord {
  return {
    ...job,
    state: "leased",
    attempt: job.attempt + 1,
    lease: { id: crypto.randomUUID(), workerId: worker.workerId, expiresAt: now + o.leaseMs },
    startedAt: job.startedAt ?? now,
  };
}

function requireLive(job: JobRecord, leaseId: string): void {
  if (job.state !== "leased" || job.lease?.id !== leaseId) {
    throw new StaleLeaseError(
      job.id,
      job.state === "leased"
        ? "the lease was handed to another worker"
        : `the job is ${job.state}, not leased`,
    );
  }
}

function appendLogs(logs: string[], lines: string[] | undefined): string[] {
  if (!lines?.length) return logs;
  const out = [...logs, ...lines];
  let chars = out.reduce((n, l) => n + l.length + 1, 0);
  while (chars > MAX_LOG_CHARS && out.length > 1) chars -= out.shift()!.length + 1;
  return out;
}

function finish(job: JobRecord, state: JobState, now: number, error: string | null): Transition {
  const settle = state === "succeeded";
  const billing = job.billing === "reserved"
    ? settle
      ? { kind: "settle" as const, amount: 0, note: `charged ${job.price} for ${job.kind} ${job.id}` }
      : { kind: "refund" as const, amount: job.price, note: `refund: ${job.kind} ${job.id} ${state}` }
    : undefined;
  return {
    job: { ...job, state, error, completedAt: now, billing: settle ? "settled" : "refunded" },
    billing,
  };
}

export function heartbeatJob(
  job: JobRecord,
  leaseId: string,
  u: HeartbeatUpdate,
  now: number,
  o: ResolvedBrokerOptions,
): JobRecord {
  requireLive(job, leaseId);
  return {
    ...job,
    lease: { ...job.lease!, expiresAt: now + o.leaseMs },
    progress: u.progress ?? job.progress,
    logs: appendLogs(job.logs, u.logs),
    checkpoint: u.checkpoint ?? job.checkpoint,
  };
}

export function completeJob(job: JobRecord, leaseId: string, done: Completion, now: number): Transition {
  // A repeated call (the worker retrying after a lost answer) changes nothing and charges nothing.
  if ((job.state === "succeeded" || job.state === "canceled") && job.lease?.id === leaseId) return { job };
  requireLive(job, leaseId);
  if (job.cancelRequested) return finish(job, "canceled", now, null);
  const t = finish(job, "succeeded", now, null);
  t.job = {
    ...t.job,
    outputs: done.outputs,
    result: done.result,
    metrics: { ...job.metrics, ...done.metrics },
  };
  return t;
}

export function failJob(
  job: JobRecord,
  leaseId: string,
  f: Failure,
  now: number,
  o: ResolvedBrokerOptions,
): Transition {
  if (isTerminal(job.state) && job.lease?.id === leaseId && job.state !== "succeeded") return { job };
  requireLive(job, leaseId);
  const logs = appendLogs(job.logs, [`attempt ${job.attempt} failed: ${f.error}`]);
  return retryOrFinish({ ...job, logs }, f.retryable, f.error, now, o);
}

/** A live lease whose time is up: the worker is presumed dead. */
export function expireLease(job: JobRecord, now: number, o: ResolvedBrokerOptions): Transition | null {
  if (job.state !== "leased" || !job.lease || job.lease.expiresAt > now) return null;
  const logs = appendLogs(job.logs, [`attempt ${job.attempt}: lease expired (worker ${job.lease.workerId})`]);
  return retryOrFinish({ ...job, logs }, true, "lease expired: the worker stopped answering", now, o);
}

function retryOrFinish(
  job: JobRecord,
  retryable: boolean,
  error: string,
  now: number,
  o: ResolvedBrokerOptions,
): Transition {
  if (job.cancelRequested) return finish(job, "canceled", now, null);
  if (!retryable) return finish(job, "failed", now, error);
  if (job.attempt >= job.maxAttempts) {
    return finish(job, "dead", now, `${error} (gave up after ${job.attempt} attempts)`);
  }
  return { job: { ...job, state: "queued", error, availableAt: now + o.backoffMs(job.attempt) } };
}

export function cancelJob(job: JobRecord, now: number): Transition {
  if (isTerminal(job.state) || job.cancelRequested) return { job };
  if (job.state === "queued") return finish({ ...job, cancelRequested: true }, "canceled", now, null);
  return { job: { ...job, cancelRequested: true } };
}

/** FIFO among ready jobs: earliest `availableAt`, then creation time, then id. */
export function readyOrder(a: JobRecord, b: JobRecord): number {
  return a.availableAt - b.availableAt || a.createdAt - b.createdAt ||
    (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}
