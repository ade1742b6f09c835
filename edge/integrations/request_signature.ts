/**
 * What Discord's and Slack's request signatures share: the error a refused request raises (the routes answer
 * it with 401), the 5-minute window a signed timestamp must fall in (an older request is a replay; the same
 * request again within it is refused by `replays.ts`), and hex.
 *
 * @example
 * ```ts
 * requireFreshTimestamp("X-Slack-Request-Timestamp", "1700000000", 1_700_000_100_000); // ok: 100 s old
 * requireFreshTimestamp("X-Slack-Request-Timestamp", "1700000000", 1_700_000_400_000); // SignatureError
 * ```
 */

/** How far a signed timestamp may lie from the server's clock, either way. */
export const SIGNATURE_WINDOW_S = 300;

/** A request whose signature is missing, malformed, wrong or too old. */
export class SignatureError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SignatureError";
  }
}

/** A header's value, or a SignatureError naming it. */
export function requireHeader(name: string, value: string | null | undefined): string {
  if (!value) throw new SignatureError(`missing the ${name} header`);
  return value;
}

/** Unix seconds within `SIGNATURE_WINDOW_S` of `nowMs`; returns them. */
export function requireFreshTimestamp(name: string, raw: string, nowMs: number): number {
  if (!/^\d{1,12}$/.test(raw)) {
    throw new SignatureError(`${name} must be unix seconds, got "${raw.slice(0, 40)}"`);
  }
  const age = Math.round(nowMs / 1000 - Number(raw));
  if (age > SIGNATURE_WINDOW_S) {
    throw new SignatureError(
      `${name} is ${age} s old; at most ${SIGNATURE_WINDOW_S} s are accepted (a replayed request?)`,
    );
  }
  if (-age > SIGNATURE_WINDOW_S) {
    throw new SignatureError(
      `${name} is ${-age} s in the future; at most ${SIGNATURE_WINDOW_S} s are accepted`,
    );
  }
  return Number(raw);
}

/** Bytes of an even-length hex string of `bytes` bytes, or a SignatureError naming `what`. */
export function hexBytes(what: string, hex: string, bytes: number): Uint8Array<ArrayBuffer> {
  if (hex.length !== bytes * 2 || !/^[0-9a-fA-F]*$/.test(hex)) {
    throw new SignatureError(
      `${what} must be ${bytes * 2} hex digits, got "${hex.slice(0, 20)}" (${hex.length})`,
    );
  }
  const out = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export const toHex = (bytes: Uint8Array): string =>
  Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
