/**
 * The job broker on Deno KV (a local SQLite file in the embedded default, Deno Deploy's KV when hosted).
 * Every transition is one atomic operation that checks the job's versionstamp (and the account's when money
 * moves), so two edges racing for a job or a refund cannot both win; a lost race is retried from a fresh read.
 *
 * Keys: ["job", id] state; ["job_spec", id, n] request and work (chunked, written once);
 * ["job_by_tenant", tenant, kind, createdAt, id]; ["ready", model, kind, availableAt, createdAt, id];
 * ["leased", expiresAt, id]; ["account", tenant]; ["ledger", tenant, seq].
 *
 * @example
 * ```ts
 * const broker = new KvJobBroker(await Deno.openKv("./data/kv.sqlite3"));
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
import { getChunks, setChunks } from "./kv_chunks.ts";

type StoredJob = Omit<JobRecord, "request" | "work">;
type Spec = Pick<JobRecord, "request" | "work">;
interface Account {
  balance: number;
  reserved: number;
  seq: number;
}

const MAX_RETRIES = 50;

const readyKey = (j: StoredJob): Deno.KvKey | null =>
  j.state === "queued" ? ["ready", j.baseModel, j.kind, j.availableAt, j.createdAt, j.id] : null;
const leasedKey = (j: StoredJob): Deno.KvKey | null =>
  j.state === "leased" && j.lease ? ["leased", j.lease.expiresAt, j.id] : null;
const sameKey = (a: Deno.KvKey | null, b: Deno.KvKey | null) => JSON.stringify(a) === JSON.stringify(b);

export class KvJobBroker implements JobBroker {
  readonly #o: ResolvedBrokerOptions;

  constructor(readonly kv: Deno.Kv, options?: BrokerOptions) {
    this.#o = resolveBrokerOptions(options);
  }

  async #full(job: StoredJob): Promise<JobRecord> {
    const spec = await getChunks<Spec>(this.kv, ["job_spec", job.id]);
    if (!spec) throw new Error(`job ${job.id}: its request is missing from the store`);
    return { ...job, ...spec };
  }

  async #account(tenant: string) {
    const e = await this.kv.get<Account>(["account", tenant]);
    return { entry: e, value: e.value ?? { balance: 0, reserved: 0, seq: 0 } };
  }

  /** Adds a ledger entry and the account update to `op`, checking the account did not change meanwhile. */
  #money(
    op: Deno.AtomicOperation,
    acc: { entry: Deno.KvEntryMaybe<Account>; value: Account },
    tenant: string,
    kind: LedgerRecord["kind"],
    amount: number,
    reservedDelta: number,
    note: string,
    job: StoredJob | null,
  ) {
    const next = {
      balance: acc.value.balance + amount,
      reserved: acc.value.reserved + reservedDelta,
      seq: acc.value.seq + 1,
    };
    const entry: LedgerRecord = {
      id: `${tenant}:${next.seq}`,
      tenant,
      kind,
      amount,
      balance: next.balance,
      jobId: job?.id ?? null,
      operation: job?.kind ?? null,
      note,
      createdAt: this.#o.now(),
    };
    op.check(acc.entry).set(["account", tenant], next).set(["ledger", tenant, next.seq], entry);
  }

  /** Reads a job, computes its transition, writes it atomically; retries when another writer got there first. */
  async #transition(id: string, step: (job: JobRecord) => Transition | null): Promise<JobRecord | null> {
    for (let i = 0; i < MAX_RETRIES; i++) {
      const entry = await this.kv.get<StoredJob>(["job", id]);
      if (!entry.value) return null;
      const before = await this.#full(entry.value);
      const t = step(before);
      if (!t) return before;
      const { request: _r, work: _w, ...after } = t.job;
      const op = this.kv.atomic().check(entry).set(["job", id], after);
      for (const keyOf of [readyKey, leasedKey]) {
        const [k0, k1] = [keyOf(entry.value), keyOf(after)];
        if (sameKey(k0, k1)) continue;
        if (k0) op.delete(k0);
        if (k1) op.set(k1, id);
      }
      if (t.billing) {
        const acc = await this.#account(before.tenant);
        const reservedDelta = before.billing === "reserved" ? -before.price : 0;
        this.#money(
          op,
          acc,
          before.tenant,
          t.billing.kind,
          t.billing.amount,
          reservedDelta,
          t.billing.note,
          after,
        );
      }
      if ((await op.commit()).ok) return t.job;
    }
    throw new Error(`job ${id}: gave up after ${MAX_RETRIES} conflicting writes`);
  }

  async #require(id: string, step: (job: JobRecord) => Transition | null): Promise<JobRecord> {
    const job = await this.#transition(id, step);
    if (!job) throw new RangeError(`no job ${id}`);
    return job;
  }

  async enqueue(job: NewJob): Promise<EnqueueResult> {
    for (let i = 0; i < MAX_RETRIES; i++) {
      const existing = await this.kv.get<StoredJob>(["job", job.id]);
      if (existing.value) return { ok: true, job: await this.#full(existing.value), created: false };
      const acc = await this.#account(job.tenant);
      if (acc.value.balance < job.price) {
        return { ok: false, reason: "insufficient_credits", balance: acc.value.balance, price: job.price };
      }
      const rec = newJobRecord(structuredClone(job), this.#o.now(), this.#o);
      const { request, work, ...stored } = rec;
      const op = this.kv.atomic().check(existing).set(["job", job.id], stored)
        .set(readyKey(stored)!, job.id)
        .set(["job_by_tenant", job.tenant, job.kind, stored.createdAt, job.id], job.id);
      setChunks(op, ["job_spec", job.id], { request, work });
      this.#money(
        op,
        acc,
        job.tenant,
        "reserve",
        -job.price,
        job.price,
        `reserved for ${job.kind} ${job.id}`,
        stored,
      );
      if ((await op.commit()).ok) return { ok: true, job: rec, created: true };
    }
    throw new Error(`job ${job.id}: gave up enqueueing after ${MAX_RETRIES} conflicting writes`);
  }

  async get(id: string): Promise<JobRecord | null> {
    const e = await this.kv.get<StoredJob>(["job", id]);
    return e.value ? await this.#full(e.value) : null;
  }

  async list(tenant: string, kind: JobKind, opts: { limit?: number; cursor?: string } = {}) {
    const limit = Math.max(1, Math.min(opts.limit ?? 50, 1000));
    const it = this.kv.list<string>({ prefix: ["job_by_tenant", tenant, kind] }, {
      reverse: true,
      limit,
      cursor: opts.cursor,
    });
    const items: JobRecord[] = [];
    for await (const e of it) {
      const job = await this.get(e.value);
      if (job) items.push(job);
    }
    return { items, next: items.length === limit && it.cursor ? it.cursor : null };
  }

  async queuePosition(id: string): Promise<number | null> {
    const e = await this.kv.get<StoredJob>(["job", id]);
    const key = e.value && readyKey(e.value);
    if (!key) return null;
    let n = 0;
    for await (const _ of this.kv.list({ start: key.slice(0, 3), end: key })) n++;
    return n;
  }

  async reap(): Promise<JobRecord[]> {
    const now = this.#o.now();
    const changed: JobRecord[] = [];
    for await (const e of this.kv.list<string>({ start: ["leased"], end: ["leased", now + 1] })) {
      const job = await this.#transition(e.value, (j) => expireLease(j, now, this.#o));
      if (job && job.state !== "leased") changed.push(job);
    }
    return changed;
  }

  async lease(worker: WorkerFilter): Promise<JobRecord | null> {
    await this.reap();
    for (let i = 0; i < MAX_RETRIES; i++) {
      const now = this.#o.now();
      let best: StoredJob | null = null;
      for (const model of worker.models) {
        for (const kind of worker.kinds) {
          for await (const e of this.kv.list<string>({ prefix: ["ready", model, kind] }, { limit: 1 })) {
            const j = (await this.kv.get<StoredJob>(["job", e.value])).value;
            if (j && j.availableAt <= now && (!best || readyOrder(j as JobRecord, best as JobRecord) < 0)) {
              best = j;
            }
          }
        }
      }
      if (!best) return null;
      let lost = false;
      const job = await this.#transition(best.id, (j) => {
        if (!canLease(j, worker, now)) return (lost = true), null;
        return { job: leaseJob(j, worker, now, this.#o) };
      });
      if (job && !lost) return job;
    }
    return null;
  }

  heartbeat(id: string, leaseId: string, update: HeartbeatUpdate): Promise<JobRecord> {
    return this.#require(id, (j) => ({ job: heartbeatJob(j, leaseId, update, this.#o.now(), this.#o) }));
  }

  complete(id: string, leaseId: string, done: Completion): Promise<JobRecord> {
    return this.#require(id, (j) => completeJob(j, leaseId, done, this.#o.now()));
  }

  fail(id: string, leaseId: string, failure: Failure): Promise<JobRecord> {
    return this.#require(id, (j) => failJob(j, leaseId, failure, this.#o.now(), this.#o));
  }

  cancel(id: string): Promise<JobRecord | null> {
    return this.#transition(id, (j) => cancelJob(j, this.#o.now()));
  }

  async credit(tenant: string, amount: number, note: string): Promise<number> {
    if (!Number.isSafeInteger(amount)) {
      throw new RangeError(`credit amount must be an integer, got ${amount}`);
    }
    for (let i = 0; i < MAX_RETRIES; i++) {
      const acc = await this.#account(tenant);
      const op = this.kv.atomic();
      this.#money(op, acc, tenant, "credit", amount, 0, note, null);
      if ((await op.commit()).ok) return acc.value.balance + amount;
    }
    throw new Error(`account ${tenant}: gave up crediting after ${MAX_RETRIES} conflicting writes`);
  }

  async account(tenant: string): Promise<{ balance: number; reserved: number }> {
    const { balance, reserved } = (await this.#account(tenant)).value;
    return { balance, reserved };
  }

  async ledger(tenant: string, opts: { limit?: number; cursor?: string } = {}): Promise<Page<LedgerRecord>> {
    const limit = Math.max(1, Math.min(opts.limit ?? 50, 1000));
    const it = this.kv.list<LedgerRecord>({ prefix: ["ledger", tenant] }, {
      reverse: true,
      limit,
      cursor: opts.cursor,
    });
    const items: LedgerRecord[] = [];
    for await (const e of it) items.push(e.value);
    return { items, next: items.length === limit && it.cursor ? it.cursor : null };
  }
}
