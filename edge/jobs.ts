/**
 * Jobs from the edge's side: accepting one (price reserved atomically, 402 with no job when short), turning
 * file ids into the blob names a worker fetches, announcing every state change as stream events and
 * webhooks, and `Prefer: wait`.
 *
 * @example
 * ```ts
 * const job = await acceptJob(edge, { id, tenant, kind: "prediction", ... });
 * announce(edge, null, job);
 * ```
 */
import type { JobRecord, NewJob } from "../shared/job_broker.ts";
import type { BlobRef } from "../shared/worker_protocol.ts";
import type { Edge } from "./context.ts";
import { isTerminal } from "../shared/job_lifecycle.ts";
import { ApiProblem } from "./problem.ts";
import { blockedReason, isIpLiteral } from "./webhooks/address.ts";
import { type FileRecord, presentJob, publicStatus } from "./records.ts";

export async function acceptJob(edge: Edge, job: NewJob): Promise<{ job: JobRecord; created: boolean }> {
  const webhook = job.request.webhook as string | undefined;
  if (webhook) refuseLiteralPrivateWebhook(webhook, edge.webhooksAllowPrivate);
  const r = await edge.broker.enqueue(job);
  if (!r.ok) {
    throw new ApiProblem(
      402,
      "insufficient-credits",
      "Insufficient credits",
      `this ${job.kind} costs ${r.price} credits; the balance is ${r.balance}`,
    );
  }
  return { job: r.job, created: r.created };
}

/**
 * A webhook URL naming a private, loopback or link-local address outright (an IP literal, localhost) is
 * refused when the job is made; names are resolved and checked again at every delivery.
 */
function refuseLiteralPrivateWebhook(raw: string, allowPrivate: boolean): void {
  if (allowPrivate) return;
  const host = new URL(raw).hostname.replace(/^\[(.*)\]$/, "$1");
  const why = host === "localhost" || host.endsWith(".localhost")
    ? "loopback (localhost)"
    : isIpLiteral(host)
    ? blockedReason(host)
    : null;
  if (why) {
    throw new ApiProblem(
      422,
      "invalid-request",
      "Invalid request",
      `webhook: ${host} is ${why}; webhooks only go to public addresses`,
      {
        invalid_fields: [{ name: "webhook", reason: `${why}: not a public address` }],
      },
    );
  }
}

/** Collects the blobs a job needs and the names its input uses for them. */
export class BlobPlan {
  readonly blobs: Record<string, BlobRef> = {};
  readonly captions: Record<string, string> = {};
  /** Pixel sizes of the image files planned, by id (where the upload recorded them). */
  readonly sizes: Record<string, { width: number; height: number }> = {};

  constructor(private readonly edge: Edge, private readonly tenant: string) {}

  async #file(id: string, field: string): Promise<FileRecord> {
    const f = await this.edge.metadata.get<FileRecord>(["files", this.tenant, id]);
    if (!f) throw unknownRef(field, `no file "${id}"`);
    return f;
  }

  /** One image file id -> its blob name (the id itself). */
  async image(id: string, field: string): Promise<string> {
    const f = await this.#file(id, field);
    if (f.kind !== "image") throw unknownRef(field, `file "${id}" is a ${f.kind}, expected an image`);
    this.blobs[id] = { sha256: f.sha256, size: f.size };
    if (f.width !== undefined && f.height !== undefined) {
      this.sizes[id] = { width: f.width, height: f.height };
    }
    return id;
  }

  /** Image file ids or one zip id -> blob names; a zip's entries become `<zip id>/<entry>` with captions. */
  async images(value: string | string[], field: string): Promise<string[]> {
    const ids = typeof value === "string" ? [value] : value;
    const names: string[] = [];
    for (const [i, id] of ids.entries()) {
      const f = await this.#file(id, typeof value === "string" ? field : `${field}.${i}`);
      if (f.kind === "zip") {
        for (const e of f.entries ?? []) {
          const name = `${id}/${e.name}`;
          this.blobs[name] = { sha256: e.sha256, size: e.size };
          if (e.caption !== undefined) this.captions[name] = e.caption;
          names.push(name);
        }
      } else names.push(await this.image(id, `${field}.${i}`));
    }
    return names;
  }

  adapter(id: string, ref: BlobRef): string {
    this.blobs[id] = ref;
    return id;
  }
}

export const unknownRef = (field: string, reason: string) =>
  new ApiProblem(422, "unknown-reference", "Unknown reference", `${field}: ${reason}`, {
    invalid_fields: [{ name: field, reason }],
  });

/** The webhook body: the job's public object as it was at the event. */
const snapshot = (job: JobRecord) => () => presentJob(job, String(job.request.origin ?? ""));

/** Publishes the events and webhooks that a change from `before` to `after` means. */
export function announce(edge: Edge, before: JobRecord | null, after: JobRecord): void {
  const { events, webhooks } = edge;
  const origin = String(after.request.origin ?? "");
  if (before?.state === after.state && before.attempt === after.attempt) return;
  if (before?.state === "leased" && after.state === "queued") {
    events.publish(after.id, {
      event: "error",
      data: { error: after.error, retrying: true, attempt: after.attempt },
    });
  }
  events.publish(after.id, { event: "status", data: { id: after.id, status: publicStatus(after) } });
  if (after.state === "leased" && after.attempt === 1) webhooks.notify(after, "start", snapshot(after));
  if (!isTerminal(after.state)) return;
  if (after.state === "succeeded") {
    const p = presentJob(after, origin);
    events.publish(after.id, { event: "output", data: { output: p.output } });
    webhooks.notify(after, "output", snapshot(after));
  } else if (after.error) {
    events.publish(after.id, { event: "error", data: { error: after.error, retrying: false } });
  }
  events.publish(after.id, { event: "done", data: { status: publicStatus(after) } });
  webhooks.notify(after, "completed", snapshot(after));
}

/** `Prefer: wait` / `wait=N` (1..60 s) -> milliseconds to wait, or 0. */
export function preferWaitMs(header: string | undefined): number {
  const m = /(?:^|[,;\s])wait(?:=(\d+))?(?:$|[,;\s])/i.exec(header ?? "");
  if (!m) return 0;
  const s = m[1] === undefined ? 60 : Number(m[1]);
  return Math.min(60, Math.max(1, s)) * 1000;
}

/** Waits until the job ends or `ms` pass; returns its latest record. */
export function waitForJob(edge: Edge, job: JobRecord, ms: number): Promise<JobRecord> {
  return new Promise((resolve, reject) => {
    let finished = false;
    const finish = () => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      off();
      edge.broker.get(job.id).then((j) => resolve(j ?? job), reject);
    };
    const off = edge.events.subscribe(job.id, (e) => e.event === "done" && finish());
    const timer = setTimeout(finish, ms);
    edge.broker.get(job.id).then((j) => j && isTerminal(j.state) && finish(), reject);
  });
}
