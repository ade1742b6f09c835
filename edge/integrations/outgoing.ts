/**
 * Requests this server makes to Discord and Slack (follow-ups, `response_url` posts): through the webhooks'
 * SSRF-safe path (`webhooks/target.ts`: resolve, refuse private, loopback and link-local addresses unless
 * `allowPrivate`, connect to the checked address), retried on 429, 5xx and network errors.
 *
 * @example
 * ```ts
 * await postOutgoing(`${base}/webhooks/${app}/${token}`, JSON.stringify({ content: "hi" }), "application/json",
 *   { allowPrivate: false });
 * ```
 */
import { postToTarget, resolveWebhookTarget, WebhookTargetError } from "../webhooks/target.ts";

export interface OutgoingOptions {
  allowPrivate: boolean;
  /** Waits before attempts 2, 3, ... */
  retryDelaysMs?: number[];
  timeoutMs?: number;
}

/** A request that could not be delivered: the target is refused, or every attempt failed. */
export class OutgoingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "OutgoingError";
  }
}

/** POSTs `body` to `url`; resolves with the 2xx status, or rejects with an OutgoingError saying why not. */
export async function postOutgoing(
  url: string,
  body: string | Uint8Array,
  contentType: string,
  o: OutgoingOptions,
): Promise<number> {
  const delays = o.retryDelaysMs ?? [1_000, 4_000];
  let last = "";
  for (let attempt = 0; attempt <= delays.length; attempt++) {
    if (attempt > 0) await new Promise((r) => setTimeout(r, delays[attempt - 1]));
    let status: number;
    try {
      const target = await resolveWebhookTarget(url, { allowPrivate: o.allowPrivate });
      status = await postToTarget(target, body, {}, o.timeoutMs ?? 15_000, contentType);
    } catch (e) {
      if (e instanceof WebhookTargetError) {
        throw new OutgoingError(`refused to post to ${redact(url)}: ${e.message}`);
      }
      last = (e as Error).message;
      continue;
    }
    if (status >= 200 && status < 300) return status;
    last = `answered ${status}`;
    if (status !== 429 && status < 500) break;
  }
  throw new OutgoingError(`${redact(url)}: ${last}`);
}

/** The URL without its last path segment (an interaction token or a response_url's secret) for logs. */
export function redact(url: string): string {
  return url.replace(/\/[^/]*$/, "/…");
}
