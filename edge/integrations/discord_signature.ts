/**
 * Discord's interaction signature: `X-Signature-Ed25519` is the hex Ed25519 signature, by the application's
 * key, of `X-Signature-Timestamp` followed by the raw body; checked with WebCrypto against the public key
 * from configuration, and the timestamp must be within 5 minutes (`request_signature.ts`).
 *
 * @example
 * ```ts
 * await verifyDiscordSignature({ publicKey: "6a1f...", signature: req.headers.get("x-signature-ed25519"),
 *   timestamp: req.headers.get("x-signature-timestamp"), body: raw, nowMs: Date.now() }); // or SignatureError
 * ```
 */
import { hexBytes, requireFreshTimestamp, requireHeader, SignatureError } from "./request_signature.ts";

const keys = new Map<string, Promise<CryptoKey>>();

/** The public key (64 hex digits) as a WebCrypto key, imported once. */
function importPublicKey(hex: string): Promise<CryptoKey> {
  let key = keys.get(hex);
  if (!key) {
    key = crypto.subtle.importKey(
      "raw",
      hexBytes("the Discord public key", hex, 32),
      { name: "Ed25519" },
      false,
      [
        "verify",
      ],
    );
    keys.set(hex, key);
  }
  return key;
}

export interface DiscordSignedRequest {
  publicKey: string;
  signature: string | null | undefined;
  timestamp: string | null | undefined;
  body: Uint8Array;
  nowMs: number;
}

/** Resolves when the request is Discord's and fresh; rejects with a SignatureError saying why not. */
export async function verifyDiscordSignature(r: DiscordSignedRequest): Promise<void> {
  const signature = hexBytes("X-Signature-Ed25519", requireHeader("X-Signature-Ed25519", r.signature), 64);
  const timestamp = requireHeader("X-Signature-Timestamp", r.timestamp);
  requireFreshTimestamp("X-Signature-Timestamp", timestamp, r.nowMs);
  const head = new TextEncoder().encode(timestamp);
  const message = new Uint8Array(head.byteLength + r.body.byteLength);
  message.set(head);
  message.set(r.body, head.byteLength);
  const ok = await crypto.subtle.verify("Ed25519", await importPublicKey(r.publicKey), signature, message);
  if (!ok) {
    throw new SignatureError("the X-Signature-Ed25519 signature does not verify with the application's key");
  }
}
