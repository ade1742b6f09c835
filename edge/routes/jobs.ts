/**
 * The routes every job kind shares: list, get, cancel and the event stream (`text/event-stream`: `status`,
 * `progress` {step, total, loss?, eta_s}, `preview` {png: base64}, `output`, `log` {message}, `error`,
 * `done`; a `: keep-alive` comment every 15 s).
 */
import type { Hono } from "hono";
import { streamSSE } from "hono/streaming";
import type { z } from "zod";
import type { JobRecord } from "../../shared/job_broker.ts";
import { isTerminal } from "../../shared/job_lifecycle.ts";
import { JobList } from "../../shared/jobs.ts";
import type { JobKind } from "../../shared/worker_protocol.ts";
import { type EdgeContext, type EdgeEnv, originOf, param } from "../context.ts";
import type { JobEvent } from "../events.ts";
import { announce } from "../jobs.ts";
import { type OpenApi, route } from "../openapi.ts";
import { ownedJob, presentJob, publicStatus } from "../records.ts";

/**
 * One job's public object with its `queue_position` (a bounded count of the jobs ahead, omitted when
 * unknown). Only single-job responses ask for it; list items go without, so a page costs no queue reads.
 */
export async function present(c: EdgeContext, job: JobRecord): Promise<Record<string, unknown>> {
  const position = job.state === "queued" ? await c.get("edge").broker.queuePosition(job.id) : null;
  return presentJob(job, originOf(c), position);
}

export function jobRoutes(
  app: Hono<EdgeEnv>,
  api: OpenApi,
  kind: JobKind,
  plural: string,
  schema: z.ZodType,
): void {
  const tags = [plural];
  const base = `/v1/${plural}`;
  route(app, api, {
    method: "get",
    path: base,
    summary: `List ${plural}, newest first`,
    tags,
    auth: "api_key",
    query: { cursor: { description: "from a previous page's next" } },
    responses: { 200: { description: `A page of ${plural}`, schema: JobList(schema) } },
  }, async (c) => {
    const page = await c.get("edge").broker.list(c.get("tenant").id, kind, { cursor: c.req.query("cursor") });
    return c.json({ data: page.items.map((j) => presentJob(j, originOf(c))), next: page.next });
  });

  route(
    app,
    api,
    {
      method: "get",
      path: `${base}/:id`,
      summary: `Get a ${kind}`,
      tags,
      auth: "api_key",
      responses: { 200: { description: `The ${kind}`, schema } },
    },
    async (c) =>
      c.json(await present(c, await ownedJob(c.get("edge"), c.get("tenant").id, kind, param(c, "id")))),
  );

  route(app, api, {
    method: "post",
    path: `${base}/:id/cancel`,
    summary: `Cancel a ${kind}`,
    description:
      "Queued: canceled and refunded at once. Running: the worker is told at its next heartbeat; the job ends canceled and refunded. Finished: unchanged.",
    tags,
    auth: "api_key",
    responses: { 200: { description: `The ${kind} after the request`, schema } },
  }, async (c) => {
    const edge = c.get("edge");
    const before = await ownedJob(edge, c.get("tenant").id, kind, param(c, "id"));
    const after = (await edge.broker.cancel(before.id)) ?? before;
    announce(edge, before, after);
    return c.json(await present(c, after));
  });

  route(app, api, {
    method: "get",
    path: `${base}/:id/stream`,
    summary: `Follow a ${kind} as Server-Sent Events`,
    description:
      "Events: status, progress {step,total,loss?,eta_s}, preview {png}, output, log {message}, error, done; a keep-alive comment every 15 s. The stream ends after done.",
    tags,
    auth: "api_key",
    responses: { 200: { description: "text/event-stream", contentType: "text/event-stream" } },
  }, async (c) => {
    const edge = c.get("edge");
    const job = await ownedJob(edge, c.get("tenant").id, kind, param(c, "id"));
    return streamSSE(c, async (stream) => {
      const queue: JobEvent[] = [];
      let wake: (() => void) | null = null;
      const off = edge.events.subscribe(job.id, (e) => {
        queue.push(e);
        wake?.();
      });
      const keepAlive = setInterval(() => {
        stream.write(": keep-alive\n\n").catch(() => {});
      }, edge.keepAliveMs);
      stream.onAbort(() => wake?.());
      try {
        const now = (await edge.broker.get(job.id)) ?? job;
        const send = (e: JobEvent) => stream.writeSSE({ event: e.event, data: JSON.stringify(e.data) });
        await send({ event: "status", data: { id: now.id, status: publicStatus(now) } });
        if (now.progress) await send({ event: "progress", data: now.progress });
        if (isTerminal(now.state)) {
          const p = presentJob(now, originOf(c));
          if (now.state === "succeeded") await send({ event: "output", data: { output: p.output } });
          else if (now.error) await send({ event: "error", data: { error: now.error, retrying: false } });
          await send({ event: "done", data: { status: publicStatus(now) } });
          return;
        }
        while (!stream.aborted) {
          if (!queue.length) await new Promise<void>((r) => (wake = r));
          wake = null;
          while (queue.length) {
            const e = queue.shift()!;
            await send(e);
            if (e.event === "done") return;
          }
        }
      } finally {
        clearInterval(keepAlive);
        off();
      }
    });
  });
}
