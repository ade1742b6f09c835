/**
 * The job broker in memory: for tests and single-process experiments. Every method runs without awaiting
 * in between, so each transition and its ledger entry are atomic on the one JavaScript thread.
 *
 * @example
 * ```ts
 * let t = 0;
 * const broker = new MemoryJobBroker({ now: () => t });
 * ```
 */
import type {
  BrokerOptions,
  Completion,
  EnqueueResult,
  Failure,
  HeartbeatUpdate,
  JobBroker,
  JobRecord,
  LedgerRecord,
  NewJob,
  Page,
  WorkerFilter,
} from "../../../shared/job_broker.ts";
import {
  cancelJob,
  canLease,
  completeJob,
  expireLease,
  failJob,
  heartbeatJob,
  leaseJob,
  newJobRecord,
  readyOrder,
  resolveBrokerOptions,
  type ResolvedBrokerOptions,
  type Transition,
} from "../../../shared/job_lifecycle.ts";
import type { JobKind } from "../../../shared/worker_protocol.ts";

export class MemoryJobBroker implements JobBroker {
  readonly #o: ResolvedBrokerOptions;
  readonly #jobs = new Map<string, JobRecord>();
  readonly #accounts = new Map<string, { balance: number; reserved: number }>();
  readonly #ledger = new Map<string, LedgerRecord[]>();

  constructor(options?: BrokerOptions) {
    this.#o = resolveBrokerOptions(options);
  }

  #account(tenant: string) {
    let a = this.#accounts.get(tenant);
    if (!a) this.#accounts.set(tenant, a = { balance: 0, reserved: 0 });
    return a;
  }

  #write(tenant: string, kind: LedgerRecord["kind"], amount: number, note: string, job?: JobRecord) {
    const a = this.#account(tenant);
    a.balance += amount;
    const entries = this.#ledger.get(tenant) ?? [];
    entries.push({
      id: crypto.randomUUID(),
      tenant,
      kind,
      amount,
      balance: a.balance,
      jobId: job?.id ?? null,
      operation: job?.kind ?? null,
      note,
      createdAt: this.#o.now(),
    });
    this.#ledger.set(tenant, entries);
  }

  #apply(t: Transition): JobRecord {
    const before = this.#jobs.get(t.job.id)!;
    this.#jobs.set(t.job.id, t.job);
    if (t.billing) {
      this.#write(t.job.tenant, t.billing.kind, t.billing.amount, t.billing.note, t.job);
      if (before.billing === "reserved") this.#account(t.job.tenant).reserved -= t.job.price;
    }
    return structuredClone(t.job);
  }

  #require(id: string): JobRecord {
    const job = this.#jobs.get(id);
    if (!job) throw new RangeError(`no job ${id}`);
    return job;
  }

  enqueue(job: NewJob): Promise<EnqueueResult> {
    const existing = this.#jobs.get(job.id);
    if (existing) return Promise.resolve({ ok: true, job: structuredClone(existing), created: false });
    const a = this.#account(job.tenant);
    if (a.balance < job.price) {
      return Promise.resolve({
        ok: false,
        reason: "insufficient_credits",
        balance: a.balance,
        price: job.price,
      });
    }
    const rec = newJobRecord(structuredClone(job), this.#o.now(), this.#o);
    this.#jobs.set(rec.id, rec);
    a.reserved += job.price;
    this.#write(job.tenant, "reserve", -job.price, `reserved for ${job.kind} ${job.id}`, rec);
    return Promise.resolve({ ok: true, job: structuredClone(rec), created: true });
  }

  get(id: string): Promise<JobRecord | null> {
    const j = this.#jobs.get(id);
    return Promise.resolve(j ? structuredClone(j) : null);
  }

  list(
    tenant: string,
    kind: JobKind,
    opts: { limit?: number; cursor?: string } = {},
  ): Promise<Page<JobRecord>> {
    const all = [...this.#jobs.values()].filter((j) => j.tenant === tenant && j.kind === kind)
      .sort((a, b) => b.createdAt - a.createdAt || (a.id < b.id ? 1 : -1));
    return Promise.resolve(page(all, opts, (j) => j.id));
  }

  queuePosition(id: string): Promise<number | null> {
    const job = this.#jobs.get(id);
    if (!job || job.state !== "queued") return Promise.resolve(null);
    let ahead = 0;
    for (const j of this.#jobs.values()) {
      if (
        j.state === "queued" && j.baseModel === job.baseModel && j.kind === job.kind && readyOrder(j, job) < 0
      ) {
        ahead++;
      }
    }
    return Promise.resolve(ahead < this.#o.queuePositionLimit ? ahead : null);
  }

  reap(): Promise<JobRecord[]> {
    const now = this.#o.now();
    const changed: JobRecord[] = [];
    for (const job of [...this.#jobs.values()]) {
      const t = expireLease(job, now, this.#o);
      if (t) changed.push(this.#apply(t));
    }
    return Promise.resolve(changed);
  }

  async lease(worker: WorkerFilter): Promise<JobRecord | null> {
    await this.reap();
    const now = this.#o.now();
    const next = [...this.#jobs.values()]
      .filter((j) => canLease(j, worker, now) && (worker.serves?.(j) ?? true))
      .sort(readyOrder)[0];
    if (!next) return null;
    return this.#apply({ job: leaseJob(next, worker, now, this.#o) });
  }

  heartbeat(id: string, leaseId: string, update: HeartbeatUpdate): Promise<JobRecord> {
    return Promise.resolve().then(() =>
      this.#apply({ job: heartbeatJob(this.#require(id), leaseId, update, this.#o.now(), this.#o) })
    );
  }

  complete(id: string, leaseId: string, done: Completion): Promise<JobRecord> {
    return Promise.resolve().then(() =>
      this.#apply(completeJob(this.#require(id), leaseId, structuredClone(done), this.#o.now()))
    );
  }

  fail(id: string, leaseId: string, failure: Failure): Promise<JobRecord> {
    return Promise.resolve().then(() =>
      this.#apply(failJob(this.#require(id), leaseId, failure, this.#o.now(), this.#o))
    );
  }

  cancel(id: string): Promise<JobRecord | null> {
    const job = this.#jobs.get(id);
    return Promise.resolve(job ? this.#apply(cancelJob(job, this.#o.now())) : null);
  }

  credit(tenant: string, amount: number, note: string): Promise<number> {
    if (!Number.isSafeInteger(amount)) {
      throw new RangeError(`credit amount must be an integer, got ${amount}`);
    }
    this.#write(tenant, "credit", amount, note);
    return Promise.resolve(this.#account(tenant).balance);
  }

  account(tenant: string): Promise<{ balance: number; reserved: number }> {
    return Promise.resolve({ ...this.#account(tenant) });
  }

  ledger(tenant: string, opts: { limit?: number; cursor?: string } = {}): Promise<Page<LedgerRecord>> {
    const all = [...(this.#ledger.get(tenant) ?? [])].reverse();
    return Promise.resolve(page(all, opts, (e) => e.id));
  }
}

function page<T>(all: T[], opts: { limit?: number; cursor?: string }, idOf: (t: T) => string): Page<T> {
  const limit = Math.max(1, Math.min(opts.limit ?? 50, 1000));
  const start = opts.cursor ? all.findIndex((x) => idOf(x) === opts.cursor) + 1 : 0;
  const items = all.slice(start, start + limit).map((x) => structuredClone(x));
  const next = start + limit < all.length ? idOf(items[items.length - 1]) : null;
  return { items, next };
}
