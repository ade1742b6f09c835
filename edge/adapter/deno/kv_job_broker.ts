/**
 * The job broker on Deno KV (a local SQLite file in the embedded default, Deno Deploy's KV when hosted).
 * Every transition is one atomic operation that checks the job's versionstamp (and the account's when money
 * moves), so two edges racing for a job or a refund cannot both win; a lost race is retried from a fresh read
 * after a jittered, exponentially growing pause, and after `writeAttempts` lost races the call gives up with
 * `BrokerBusyError` (nothing written; the edge answers 503 with Retry-After).
 *
 * Contention on a tenant's account (every submission reserves credits on it) is kept inside this process by
 * a per-tenant queue: one account write per tenant at a time, each one atomic write checking the account's
 * versionstamp (known from this process's last write, so no read first) and that the job id is new. Only
 * writers in other processes (other edges), or a change to the same job, can make such a write lose; the
 * atomic checks keep that correct. `queuePosition` reads at most `queuePositionLimit` queue keys.
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
import {
  BrokerBusyError,
  type BrokerOptions,
  type Completion,
  type EnqueueResult,
  type Failure,
  type HeartbeatUpdate,
  type JobBroker,
  type JobRecord,
  LEASE_SCAN,
  type LedgerRecord,
  type NewJob,
  type Page,
  type WorkerFilter,
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
/** An account as last read or written: the versionstamp an atomic write checks, null when it does not exist. */
interface AccountEntry {
  value: Account;
  versionstamp: string | null;
}

export interface KvJobBrokerOptions extends BrokerOptions {
  /** Tries of one write that keeps losing to concurrent writers before `BrokerBusyError` (default 10). */
  writeAttempts?: number;
  /** The pause before retry n is random in [0, min(retryMaxMs, retryBaseMs * 2^(n-1))] (defaults 4, 250). */
  retryBaseMs?: number;
  retryMaxMs?: number;
}

/** Returned by an attempt that lost its race: try again (after a pause). */
const LOST = Symbol("lost");
type Attempt<T> = Promise<T | typeof LOST>;
/** Races `lease` may lose to other workers before it answers "nothing for you" for now. */
const LEASE_TRIES = 20;
/** Accounts whose last written version this process remembers. */
const MAX_CACHED_ACCOUNTS = 10_000;

const readyKey = (j: StoredJob): Deno.KvKey | null =>
  j.state === "queued" ? ["ready", j.baseModel, j.kind, j.availableAt, j.createdAt, j.id] : null;
const leasedKey = (j: StoredJob): Deno.KvKey | null =>
  j.state === "leased" && j.lease ? ["leased", j.lease.expiresAt, j.id] : null;
const sameKey = (a: Deno.KvKey | null, b: Deno.KvKey | null) => JSON.stringify(a) === JSON.stringify(b);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Runs tasks of the same key one after another (in this process), tasks of different keys concurrently. */
class KeyedQueue {
  readonly #tails = new Map<string, Promise<void>>();

  async run<T>(key: string, task: () => Promise<T>): Promise<T> {
    const before = this.#tails.get(key);
    let done!: () => void;
    const tail = new Promise<void>((r) => (done = r));
    this.#tails.set(key, tail);
    try {
      await before;
      return await task();
    } finally {
      done();
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    }
  }
}

export class KvJobBroker implements JobBroker {
  readonly #o: ResolvedBrokerOptions;
  readonly #writeAttempts: number;
  readonly #retryBaseMs: number;
  readonly #retryMaxMs: number;
  /** One account write per tenant at a time in this process (concurrent ones would only conflict). */
  readonly #accountQueue = new KeyedQueue();
  /** This process's last successful write of each account: a hint, checked by every write that uses it. */
  readonly #accounts = new Map<string, AccountEntry>();

  constructor(readonly kv: Deno.Kv, options?: KvJobBrokerOptions) {
    this.#o = resolveBrokerOptions(options);
    this.#writeAttempts = Math.max(1, options?.writeAttempts ?? 10);
    this.#retryBaseMs = options?.retryBaseMs ?? 4;
    this.#retryMaxMs = options?.retryMaxMs ?? 250;
  }

  async #full(job: StoredJob): Promise<JobRecord> {
    const spec = await getChunks<Spec>(this.kv, ["job_spec", job.id]);
    if (!spec) throw new Error(`job ${job.id}: its request is missing from the store`);
    return { ...job, ...spec };
  }

  /** The stored account (`fresh`), or the version this process last wrote when it remembers one. */
  async #account(tenant: string, fresh = true): Promise<AccountEntry & { cached: boolean }> {
    const known = fresh ? undefined : this.#accounts.get(tenant);
    if (known) return { ...known, cached: true };
    const e = await this.kv.get<Account>(["account", tenant]);
    return {
      value: e.value ?? { balance: 0, reserved: 0, seq: 0 },
      versionstamp: e.versionstamp,
      cached: false,
    };
  }

  /** Runs `attempt` until it does not lose its race: a jittered exponential pause between tries. */
  async #retry<T>(what: string, attempt: (n: number) => Attempt<T>): Promise<T> {
    for (let n = 0; n < this.#writeAttempts; n++) {
      if (n > 0) await sleep(Math.random() * Math.min(this.#retryMaxMs, this.#retryBaseMs * 2 ** (n - 1)));
      const r = await attempt(n);
      if (r !== LOST) return r;
    }
    throw new BrokerBusyError(`${what}: gave up after ${this.#writeAttempts} conflicting writes`);
  }

  /**
   * Runs `write` in the tenant's queue with its account (remembered, unless `fresh`). `write` builds the
   * atomic operation (its `#money` checks the account it was given) or answers null (nothing to write);
   * the account's next value is remembered when the commit wins, forgotten when it loses.
   */
  #withAccount(
    tenant: string,
    fresh: boolean,
    write: (
      acc: AccountEntry & { cached: boolean },
    ) => Promise<{ op: Deno.AtomicOperation; next: Account } | null>,
  ): Promise<"ok" | "lost" | "skipped"> {
    return this.#accountQueue.run(tenant, async () => {
      const w = await write(await this.#account(tenant, fresh));
      if (!w) return "skipped";
      const r = await w.op.commit();
      if (!r.ok) {
        this.#accounts.delete(tenant);
        return "lost";
      }
      if (this.#accounts.size >= MAX_CACHED_ACCOUNTS) this.#accounts.clear();
      this.#accounts.set(tenant, { value: w.next, versionstamp: r.versionstamp });
      return "ok";
    });
  }

  /** Adds a ledger entry and the account update to `op`, checking the account did not change meanwhile. */
  #money(
    op: Deno.AtomicOperation,
    acc: AccountEntry,
    tenant: string,
    kind: LedgerRecord["kind"],
    amount: number,
    reservedDelta: number,
    note: string,
    job: StoredJob | null,
  ): Account {
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
    op.check({ key: ["account", tenant], versionstamp: acc.versionstamp })
      .set(["account", tenant], next).set(["ledger", tenant, next.seq], entry);
    return next;
  }

  /** Reads a job, computes its transition, writes it atomically; retries when another writer got there first. */
  #transition(id: string, step: (job: JobRecord) => Transition | null): Promise<JobRecord | null> {
    return this.#retry(`job ${id}`, async (n) => {
      const entry = await this.kv.get<StoredJob>(["job", id]);
      if (!entry.value) return null;
      const before = await this.#full(entry.value);
      const t = step(before);
      if (!t) return before;
      const { request: _r, work: _w, ...after } = t.job;
      const op = () => {
        const op = this.kv.atomic().check(entry).set(["job", id], after);
        for (const keyOf of [readyKey, leasedKey]) {
          const [k0, k1] = [keyOf(entry.value!), keyOf(after)];
          if (sameKey(k0, k1)) continue;
          if (k0) op.delete(k0);
          if (k1) op.set(k1, id);
        }
        return op;
      };
      const billing = t.billing;
      if (!billing) return (await op().commit()).ok ? t.job : LOST;
      const reservedDelta = before.billing === "reserved" ? -before.price : 0;
      const r = await this.#withAccount(before.tenant, n > 0, (acc) => {
        const atomic = op();
        const next = this.#money(
          atomic,
          acc,
          before.tenant,
          billing.kind,
          billing.amount,
          reservedDelta,
          billing.note,
          after,
        );
        return Promise.resolve({ op: atomic, next });
      });
      return r === "ok" ? t.job : LOST;
    });
  }

  async #require(id: string, step: (job: JobRecord) => Transition | null): Promise<JobRecord> {
    const job = await this.#transition(id, step);
    if (!job) throw new RangeError(`no job ${id}`);
    return job;
  }

  /**
   * One atomic write: the job (checked not to exist yet), its queue and tenant index entries, its request,
   * and the reservation on the account (checked unchanged). A write that loses finds out why: the job exists
   * (a repeated request: returned as it is) or the account moved (retried after a pause).
   */
  enqueue(job: NewJob): Promise<EnqueueResult> {
    const existing = async (): Promise<EnqueueResult | null> => {
      const e = await this.kv.get<StoredJob>(["job", job.id]);
      return e.value ? { ok: true, job: await this.#full(e.value), created: false } : null;
    };
    return this.#retry(`job ${job.id}: enqueueing`, async (n) => {
      let refused = null as EnqueueResult | null;
      let rec: JobRecord | null = null;
      const r = await this.#withAccount(job.tenant, n > 0, async (acc) => {
        // A remembered account may be out of date (a top-up by another edge): refuse only on a fresh read.
        if (acc.value.balance < job.price && acc.cached) acc = await this.#account(job.tenant);
        if (acc.value.balance < job.price) {
          refused = (await existing()) ??
            { ok: false, reason: "insufficient_credits", balance: acc.value.balance, price: job.price };
          return null;
        }
        rec = newJobRecord(structuredClone(job), this.#o.now(), this.#o);
        const { request, work, ...stored } = rec;
        const op = this.kv.atomic().check({ key: ["job", job.id], versionstamp: null })
          .set(["job", job.id], stored)
          .set(readyKey(stored)!, job.id)
          .set(["job_by_tenant", job.tenant, job.kind, stored.createdAt, job.id], job.id);
        setChunks(op, ["job_spec", job.id], { request, work });
        const next = this.#money(
          op,
          acc,
          job.tenant,
          "reserve",
          -job.price,
          job.price,
          `reserved for ${job.kind} ${job.id}`,
          stored,
        );
        return { op, next };
      });
      if (r === "ok") return { ok: true, job: rec!, created: true };
      if (refused) return refused;
      return (await existing()) ?? LOST;
    });
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

  /** Counts the queue's keys before the job's, reading at most `queuePositionLimit` of them. */
  async queuePosition(id: string): Promise<number | null> {
    const e = await this.kv.get<StoredJob>(["job", id]);
    const key = e.value && readyKey(e.value);
    if (!key) return null;
    const limit = this.#o.queuePositionLimit;
    if (limit < 1) return null;
    let n = 0;
    const ahead = this.kv.list({ start: key.slice(0, 3), end: key }, {
      limit,
      batchSize: Math.min(limit, 500),
    });
    for await (const _ of ahead) n++;
    return n < limit ? n : null;
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
    for (let i = 0; i < LEASE_TRIES; i++) {
      const now = this.#o.now();
      let best: StoredJob | null = null;
      for (const model of worker.models) {
        for (const kind of worker.kinds) {
          // The queue's first job the worker serves (most workers serve all: the head).
          const limit = worker.serves ? LEASE_SCAN : 1;
          for await (const e of this.kv.list<string>({ prefix: ["ready", model, kind] }, { limit })) {
            const j = (await this.kv.get<StoredJob>(["job", e.value])).value;
            if (!j || (worker.serves && !worker.serves(await this.#full(j)))) continue;
            if (j.availableAt <= now && (!best || readyOrder(j as JobRecord, best as JobRecord) < 0)) {
              best = j;
            }
            break;
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
    return await this.#retry(`account ${tenant}: crediting`, async (n) => {
      let balance = 0;
      const r = await this.#withAccount(tenant, n > 0, (acc) => {
        const op = this.kv.atomic();
        const next = this.#money(op, acc, tenant, "credit", amount, 0, note, null);
        balance = next.balance;
        return Promise.resolve({ op, next });
      });
      return r === "ok" ? balance : LOST;
    });
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
