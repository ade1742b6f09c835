/**
 * What every public job object (prediction, training, merge) has in common: status, urls, timing, logs,
 * webhooks and the stream's event names. API.md's field names; the edge renders broker records into these.
 *
 * @example
 * ```ts
 * WebhookEventsFilter.parse(["start", "completed"]);
 * JobStatus.parse("starting");
 * ```
 */
import { z } from "zod";

export const JobStatus = z.enum(["starting", "processing", "succeeded", "failed", "canceled"]);
export type JobStatus = z.infer<typeof JobStatus>;

export const WebhookEvent = z.enum(["start", "output", "logs", "completed"]);
export type WebhookEvent = z.infer<typeof WebhookEvent>;
export const WebhookEventsFilter = z.array(WebhookEvent).min(1);

/** A webhook target: an absolute http(s) URL (where it may point is checked when delivering). */
export const WebhookUrl = z.url({ protocol: /^https?$/ }).max(2000);

export const JobUrls = z.object({ get: z.string(), cancel: z.string(), stream: z.string() });

/** Fields of every job object; each kind adds its own (`input`, `output`, ...). */
export const JobFields = {
  id: z.string(),
  status: JobStatus,
  queue_position: z.number().int().nonnegative().optional()
    .describe("jobs ahead of this one while it is queued; omitted in lists, and when 100 or more are ahead"),
  error: z.string().nullable(),
  logs: z.string(),
  metrics: z.record(z.string(), z.number()),
  created_at: z.string(),
  started_at: z.string().nullable(),
  completed_at: z.string().nullable(),
  urls: JobUrls,
  webhook: z.string().optional(),
  webhook_events_filter: WebhookEventsFilter.optional(),
  /** Credits reserved for this job (settled on success, refunded on failure or cancel). */
  cost: z.number().int().nonnegative(),
};

export const JobList = <T extends z.ZodType>(item: T) =>
  z.object({ data: z.array(item), next: z.string().nullable() });

/** Names of the events of `GET <job>/stream` (text/event-stream). */
export const StreamEvent = z.enum(["status", "progress", "preview", "output", "log", "error", "done"]);
export type StreamEvent = z.infer<typeof StreamEvent>;
