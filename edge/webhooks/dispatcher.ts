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

type Timer = ReturnType<typeof setTimeout>;
const ALL_EVENTS: WebhookEvent[] = ["start", "output", "logs", "completed"];

export class WebhookDispatcher {
  readonly #o: Required<Omit<WebhookDispatcherOptions, "resolve">> & { resolve?: Resolver };
  readonly #lastSent = new Map<string, number>();
  readonly #pending = new Map<string, { timer: Timer; render: () => unknown }>();
  readonly #timers = new Set<Timer>();
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
        const timer = this.#later(wait, () => {
          const p = this.#pending.get(key)!;
          this.#pending.delete(key);
          this.#send(job, event, url, p.render, key);
        });
        this.#pending.set(key, { timer, render });
        return;
      }
    }
    this.#send(job, event, url, render, key);
  }

  #cancelPending(key: string) {
    const p = this.#pending.get(key);
    if (p) clearTimeout(p.timer), this.#timers.delete(p.timer), this.#pending.delete(key);
  }

  #later(ms: number, fn: () => void): Timer {
    const timer = setTimeout(() => (this.#timers.delete(timer), fn()), ms);
    this.#timers.add(timer);
    return timer;
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
        if (attempt > 0) await new Promise<void>((r) => this.#later(this.#o.retryDelaysMs[attempt - 1], r));
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

  /** Resolves when nothing is pending or in flight (tests). */
  async idle(): Promise<void> {
    while (this.#inflight.size || this.#pending.size) {
      await Promise.all([...this.#inflight]);
      if (this.#pending.size) await new Promise((r) => setTimeout(r, this.#o.throttleMs / 4));
    }
  }

  /** Stops timers (pending throttled sends and retry waits are dropped). */
  close(): void {
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
    this.#pending.clear();
  }
}
