/**
 * Refusing a signed request that came before. Discord's and Slack's signatures bind a timestamp and the body,
 * and a timestamp is accepted for `SIGNATURE_WINDOW_S` either way of the server's clock
 * (`request_signature.ts`), so within that window a captured request would verify again, and a replayed
 * `/imagine` would run (and be paid for) again. `refuseReplay`, called once a signature verified, records
 * what was signed in the metadata store with `create` (on Deno KV an atomic check-and-set on an absent key:
 * edges that share the KV agree on which arrival was first) until the timestamp is no longer accepted, and
 * refuses any later arrival of it with a SignatureError (401, as the other refusals).
 *
 * The record is keyed by the SHA-256 of the timestamp and body, not of the signature header: a header can be
 * spelled anew (Discord's hex is read in either case) and still verify, what was signed cannot. Both
 * platforms' signatures are deterministic (HMAC-SHA256, RFC 8032 Ed25519), so this is the same as one record
 * per signature for the requests they send.
 *
 * Legitimate retries are never refused: Discord sends every interaction (and any redelivery) as a newly
 * signed request, and Slack's retries carry a new `X-Slack-Request-Timestamp` and signature. Only a byte-
 * for-byte repeat of a request already received is a replay; a command delivered twice under new
 * signatures still names one job by its idempotency key (the interaction id, the `trigger_id`).
 *
 * @example
 * ```ts
 * await verifySlackSignature({ signingSecret, signature, timestamp, body, nowMs });
 * await refuseReplay(edge.metadata, { platform: "slack", timestamp, body }, nowMs); // again: SignatureError
 * ```
 */
import type { IntegrationPlatform } from "../../shared/integrations.ts";
import type { MetadataStore } from "../../shared/metadata_store.ts";
import { SIGNATURE_WINDOW_S, SignatureError, toHex } from "./request_signature.ts";

/** How long a record outlives its timestamp's window: rounding, and edges' clocks that disagree a little. */
export const REPLAY_MARGIN_MS = 60_000;

/** A request whose signature verified: its platform, its signed timestamp (unix seconds) and raw body. */
export interface VerifiedRequest {
  platform: IntegrationPlatform;
  timestamp: string;
  body: Uint8Array;
}

interface Received {
  /** When it was first received (ms, the edge's clock). */
  at: number;
}

/** The store key of a signed request: the platform and the SHA-256 of timestamp, newline, body. */
export async function replayKey(r: VerifiedRequest): Promise<readonly [string, string, string]> {
  const head = new TextEncoder().encode(`${r.timestamp}\n`);
  const message = new Uint8Array(head.byteLength + r.body.byteLength);
  message.set(head);
  message.set(r.body, head.byteLength);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", message));
  return ["integration_signed_requests", r.platform, toHex(digest)] as const;
}

/**
 * Records a verified request the first time it arrives; a SignatureError when it was received before (on
 * this edge or another one sharing the store) and its timestamp is still in the window.
 */
export async function refuseReplay(
  metadata: MetadataStore,
  r: VerifiedRequest,
  nowMs: number,
): Promise<void> {
  const key = await replayKey(r);
  // Until the timestamp is refused as too old (a timestamp ahead of this clock stays fresh for longer).
  const expireInMs = Math.max(0, (Number(r.timestamp) + SIGNATURE_WINDOW_S) * 1000 - nowMs) +
    REPLAY_MARGIN_MS;
  if (await metadata.create(key, { at: nowMs } satisfies Received, { expireInMs })) return;
  const first = await metadata.get<Received>(key);
  const ago = first ? ` ${Math.max(0, Math.round((nowMs - first.at) / 1000))} s ago` : "";
  throw new SignatureError(
    `this signed request was already received${ago}: a replay (a retry by ${r.platform} is signed anew)`,
  );
}
