/**
 * Webhook delivery for jobs: filtered by the job's `webhook_events_filter`, `output` and `logs` throttled
 * to one per 500 ms per job (the latest state wins; `completed` supersedes what is pending), signed per
 * Standard Webhooks with the tenant's secret, retried with exponential backoff, and sent only to public
 * addresses (`target.ts`). Attempts run in this process; the last outcomes are kept for inspection.
 *
 * @example
 * ```ts
 * const d = new WebhookDispatcher({ secretFor: (tenant) => secrets.get(tenant), allowPrivate: false });
 * d.notify(job, "completed", () => present(job));
 * ```
 */
import type { JobRecord } from "../../shared/job_broker.ts";
import type { WebhookEvent } from "../../shared/jobs.ts";
import { signWebhook } from "./signature.ts";
import {
  postToTarget,
  type Resolver,
  resolveWebhookTarget,
  type WebhookTarget,
  WebhookTargetError,
} from "./target.ts";

export interface WebhookDispatcherOptions {
  secretFor: (tenant: string) => Promise<string>;
  allowPrivate: boolean;
  resolve?: Resolver;
  /** Sends one signed request; the default opens a connection to the checked address. */
  send?: (target: WebhookTarget, body: string, headers: Record<string, string>) => Promise<number>;
  /** Waits before attempts 2, 3, ... (default 5 s, 30 s, 2 min, 10 min, 30 min). */
  retryDelaysMs?: number[];
  throttleMs?: number;
  timeoutMs?: number;
  now?: () => number;
  /**
   * Runs `fn` after `ms` and returns its cancel (default: setTimeout). Throttled sends and retry waits go
   * through it, so a test can drive them with a manual clock (together with `now`).
   */
  schedule?: (ms: number, fn: () => void) => () => void;
}

export interface DeliveryOutcome {
  jobId: string;
  event: WebhookEvent;
  messageId: string;
  url: string;
  attempts: number;
  status: number | null;
  ok: boolean;
  error: string | null;
}

const ALL_EVENTS: WebhookEvent[] = ["start", "output", "logs", "completed"];

export class WebhookDispatcher {
  readonly #o: Required<Omit<WebhookDispatcherOptions, "resolve">> & { resolve?: Resolver };
  readonly #lastSent = new Map<string, number>();
  readonly #pending = new Map<string, { cancel: () => void; render: () => unknown }>();
  readonly #timers = new Set<() => void>();
  /** Callers of idle() waiting for a throttled send to go out (or be dropped). */
  readonly #waiters = new Set<() => void>();
  readonly #inflight = new Set<Promise<void>>();
  readonly #turns = new Map<string, Promise<void>>();
  #seq = 0;
  /** The latest outcomes, newest last (bounded). */
  readonly outcomes: DeliveryOutcome[] = [];

  constructor(o: WebhookDispatcherOptions) {
    this.#o = {
      send: (t, b, h) => postToTarget(t, b, h, o.timeoutMs ?? 10_000),
      retryDelaysMs: [5_000, 30_000, 120_000, 600_000, 1_800_000],
      throttleMs: 500,
      timeoutMs: 10_000,
      now: Date.now,
      schedule: (ms, fn) => {
        const timer = setTimeout(fn, ms);
        return () => clearTimeout(timer);
      },
      ...o,
    };
  }

  /**
   * Queues a webhook for `job` if it asked for `event`; `render` makes the body (the public job object) when
   * the message is sent — for throttled `output`/`logs` that is the latest state.
   */
  notify(job: JobRecord, event: WebhookEvent, render: () => unknown): void {
    const url = job.request.webhook as string | undefined;
    if (!url) return;
    const filter = (job.request.webhook_events_filter as WebhookEvent[] | undefined) ?? ALL_EVENTS;
    if (!filter.includes(event)) return;
    const key = `${job.id}:${event}`;
    if (event === "completed") {
      for (const e of ["output", "logs"]) this.#cancelPending(`${job.id}:${e}`);
    }
    if (event === "output" || event === "logs") {
      const pending = this.#pending.get(key);
      if (pending) return void (pending.render = render);
      const wait = (this.#lastSent.get(key) ?? -Infinity) + this.#o.throttleMs - this.#o.now();
      if (wait > 0) {
        const cancel = this.#later(wait, () => {
          const p = this.#pending.get(key)!;
          this.#pending.delete(key);
          this.#send(job, event, url, p.render, key);
          this.#wakeWaiters();
        });
        this.#pending.set(key, { cancel, render });
        return;
      }
    }
    this.#send(job, event, url, render, key);
  }

  #cancelPending(key: string) {
    const p = this.#pending.get(key);
    if (p) p.cancel(), this.#pending.delete(key), this.#wakeWaiters();
  }

  /** `fn` after `ms` on the dispatcher's clock; returns the cancel (which close() also calls). */
  #later(ms: number, fn: () => void): () => void {
    let cancelSchedule = () => {};
    const cancel = () => (cancelSchedule(), this.#timers.delete(cancel));
    this.#timers.add(cancel);
    cancelSchedule = this.#o.schedule(ms, () => (this.#timers.delete(cancel), fn()));
    return cancel;
  }

  #wakeWaiters() {
    for (const w of this.#waiters) w();
    this.#waiters.clear();
  }

  #send(job: JobRecord, event: WebhookEvent, url: string, render: () => unknown, key: string) {
    this.#lastSent.set(key, this.#o.now());
    if (this.#lastSent.size > 10_000) this.#lastSent.delete(this.#lastSent.keys().next().value!);
    const messageId = `msg_${job.id}_${event}_${++this.#seq}`;
    const p = this.#deliver(job, event, url, render, messageId).finally(() => this.#inflight.delete(p));
    this.#inflight.add(p);
  }

  async #deliver(job: JobRecord, event: WebhookEvent, url: string, render: () => unknown, messageId: string) {
    // A job's messages make their first attempts in order (start before completed); retries do not block.
    const before = this.#turns.get(job.id);
    let firstTried!: () => void;
    const turn = new Promise<void>((r) => (firstTried = r));
    this.#turns.set(job.id, turn);
    const endTurn = () => {
      firstTried();
      if (this.#turns.get(job.id) === turn) this.#turns.delete(job.id);
    };
    const outcome: DeliveryOutcome = {
      jobId: job.id,
      event,
      messageId,
      url,
      attempts: 0,
      status: null,
      ok: false,
      error: null,
    };
    try {
      const body = JSON.stringify(await render());
      const secret = await this.#o.secretFor(job.tenant);
      await before;
      for (let attempt = 0; attempt <= this.#o.retryDelaysMs.length; attempt++) {
        if (attempt === 1) endTurn();
        if (attempt > 0) {
          await new Promise<void>((r) => void this.#later(this.#o.retryDelaysMs[attempt - 1], r));
        }
        outcome.attempts++;
        try {
          // Resolve and check on every attempt: the answer may have changed to a private address meanwhile.
          const target = await resolveWebhookTarget(url, {
            allowPrivate: this.#o.allowPrivate,
            resolve: this.#o.resolve,
          });
          const timestamp = Math.floor(this.#o.now() / 1000);
          const headers = {
            "webhook-id": messageId,
            "webhook-timestamp": String(timestamp),
            "webhook-signature": await signWebhook(secret, messageId, timestamp, body),
          };
          outcome.status = await this.#o.send(target, body, headers);
          outcome.error = null;
          if (outcome.status >= 200 && outcome.status < 300) return void (outcome.ok = true);
          outcome.error = `answered ${outcome.status}`;
        } catch (e) {
          outcome.error = (e as Error).message;
          if (e instanceof WebhookTargetError) return; // refused targets are not retried
        }
      }
    } catch (e) {
      outcome.error = (e as Error).message;
    } finally {
      endTurn();
      this.outcomes.push(outcome);
      if (this.outcomes.length > 200) this.outcomes.shift();
    }
  }

  /** Resolves when nothing is pending or in flight (tests): waits for throttled sends to go out. */
  async idle(): Promise<void> {
    while (this.#inflight.size || this.#pending.size) {
      if (this.#inflight.size) await Promise.all([...this.#inflight]);
      else await new Promise<void>((r) => this.#waiters.add(r));
    }
  }

  /** Resolves when no delivery is in flight; throttled sends may still be pending (tests). */
  async delivered(): Promise<void> {
    while (this.#inflight.size) await Promise.all([...this.#inflight]);
  }

  /** Throttled sends waiting for their interval (tests). */
  get pendingCount(): number {
    return this.#pending.size;
  }

  /** Stops timers (pending throttled sends and retry waits are dropped). */
  close(): void {
    for (const cancel of [...this.#timers]) cancel();
    this.#timers.clear();
    this.#pending.clear();
    this.#wakeWaiters();
  }
}
