/**
 * Standard Webhooks signatures: `webhook-signature: v1,<base64 HMAC-SHA256(secret, "<id>.<timestamp>.<body>")>`
 * where the secret is the base64 part of the tenant's `whsec_...` key. `verifyWebhook` is what a receiver
 * runs (and what the tests run against the published secret).
 *
 * @example
 * ```ts
 * const secret = generateWebhookSecret();
 * const sig = await signWebhook(secret, "msg_1", 1700000000, '{"id":"p_1"}');
 * await verifyWebhook(secret, { "webhook-id": "msg_1", "webhook-timestamp": "1700000000", "webhook-signature": sig }, '{"id":"p_1"}', 1700000000);
 * ```
 */
import { timingSafeEqual } from "../auth/api_keys.ts";

const b64 = (bytes: Uint8Array) => btoa(String.fromCharCode(...bytes));

export function generateWebhookSecret(): string {
  return `whsec_${b64(crypto.getRandomValues(new Uint8Array(24)))}`;
}

function secretBytes(secret: string): Uint8Array {
  if (!secret.startsWith("whsec_")) {
    throw new TypeError(`a webhook secret starts with whsec_, got "${secret.slice(0, 6)}..."`);
  }
  return Uint8Array.from(atob(secret.slice(6)), (c) => c.charCodeAt(0));
}

export async function signWebhook(
  secret: string,
  id: string,
  timestamp: number,
  body: string,
): Promise<string> {
  const key = await crypto.subtle.importKey(
    "raw",
    secretBytes(secret) as Uint8Array<ArrayBuffer>,
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const mac = await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(`${id}.${timestamp}.${body}`));
  return `v1,${b64(new Uint8Array(mac))}`;
}

/** True when one of the header's space-separated `v1,` signatures matches and the timestamp is fresh. */
export async function verifyWebhook(
  secret: string,
  headers: Record<string, string | null | undefined>,
  body: string,
  nowS = Math.floor(Date.now() / 1000),
  toleranceS = 300,
): Promise<boolean> {
  const id = headers["webhook-id"],
    ts = Number(headers["webhook-timestamp"]),
    sigs = headers["webhook-signature"];
  if (!id || !Number.isFinite(ts) || !sigs || Math.abs(nowS - ts) > toleranceS) return false;
  const want = await signWebhook(secret, id, ts, body);
  return sigs.split(" ").some((s) => timingSafeEqual(s, want));
}
