/**
 * Port: the blob store. Content-addressed bytes (the key is the SHA-256 of the content), so a blob written
 * twice is stored once and a reference can be checked against its bytes. Implementations: memory (tests),
 * files under DATA_DIR/blobs (embedded), R2 (scale-out).
 *
 * @example
 * ```ts
 * const ref = await blobs.put(new TextEncoder().encode("hi"));
 * (await blobs.get(ref.sha256))?.byteLength; // 2
 * ```
 */
import { z } from "zod";

/** A blob by its content: SHA-256 (hex) and size. */
export const BlobRef = z.object({
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  size: z.number().int().nonnegative(),
});
export type BlobRef = z.infer<typeof BlobRef>;

export interface BlobStore {
  /** Stores bytes under their SHA-256 (idempotent). */
  put(bytes: Uint8Array): Promise<BlobRef>;
  get(sha256: string): Promise<Uint8Array | null>;
  /** The reference when the blob exists, else null. */
  stat(sha256: string): Promise<BlobRef | null>;
}

/** Hex SHA-256 of bytes. */
export async function sha256Hex(bytes: Uint8Array | string): Promise<string> {
  const data = typeof bytes === "string" ? new TextEncoder().encode(bytes) : bytes;
  const digest = await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

export const SHA256_HEX = /^[0-9a-f]{64}$/;
