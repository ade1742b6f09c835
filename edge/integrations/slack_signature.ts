/**
 * Slack's request signature (v0): `X-Slack-Signature` is `v0=` + hex HMAC-SHA256, keyed with the app's
 * signing secret, of `v0:{X-Slack-Request-Timestamp}:{raw body}`; compared in constant time, with the
 * timestamp within 5 minutes (`request_signature.ts`).
 *
 * @example
 * ```ts
 * const signature = await slackSignature("8f742231b10e8888abcd99yyyzzz85a5", "1531420618", body);
 * await verifySlackSignature({ signingSecret, signature, timestamp: "1531420618", body, nowMs: Date.now() });
 * ```
 */
import { timingSafeEqual } from "../auth/api_keys.ts";
import { requireFreshTimestamp, requireHeader, SignatureError, toHex } from "./request_signature.ts";

/** `v0=<hex>` for a body sent at `timestamp` (unix seconds). */
export async function slackSignature(secret: string, timestamp: string, body: Uint8Array): Promise<string> {
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const head = new TextEncoder().encode(`v0:${timestamp}:`);
  const message = new Uint8Array(head.byteLength + body.byteLength);
  message.set(head);
  message.set(body, head.byteLength);
  return `v0=${toHex(new Uint8Array(await crypto.subtle.sign("HMAC", key, message)))}`;
}

export interface SlackSignedRequest {
  signingSecret: string;
  signature: string | null | undefined;
  timestamp: string | null | undefined;
  body: Uint8Array;
  nowMs: number;
}

/** Resolves when the request is Slack's and fresh; rejects with a SignatureError saying why not. */
export async function verifySlackSignature(r: SlackSignedRequest): Promise<void> {
  const given = requireHeader("X-Slack-Signature", r.signature);
  const timestamp = requireHeader("X-Slack-Request-Timestamp", r.timestamp);
  if (!/^v0=[0-9a-f]{64}$/.test(given)) {
    throw new SignatureError(
      `X-Slack-Signature must be "v0=" and 64 hex digits, got "${given.slice(0, 20)}"`,
    );
  }
  requireFreshTimestamp("X-Slack-Request-Timestamp", timestamp, r.nowMs);
  const expected = await slackSignature(r.signingSecret, timestamp, r.body);
  if (!timingSafeEqual(given, expected)) {
    throw new SignatureError("the X-Slack-Signature does not match the body and the app's signing secret");
  }
}
