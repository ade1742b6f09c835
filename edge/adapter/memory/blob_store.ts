/**
 * The blob store in memory (tests): bytes by SHA-256.
 *
 * @example
 * ```ts
 * const ref = await new MemoryBlobStore().put(new Uint8Array([1, 2, 3]));
 * ```
 */
import { type BlobStore, sha256Hex } from "../../../shared/blob_store.ts";
import type { BlobRef } from "../../../shared/worker_protocol.ts";

export class MemoryBlobStore implements BlobStore {
  readonly #blobs = new Map<string, Uint8Array>();

  async put(bytes: Uint8Array): Promise<BlobRef> {
    const sha256 = await sha256Hex(bytes);
    if (!this.#blobs.has(sha256)) this.#blobs.set(sha256, bytes.slice());
    return { sha256, size: bytes.byteLength };
  }

  get(sha256: string): Promise<Uint8Array | null> {
    return Promise.resolve(this.#blobs.get(sha256)?.slice() ?? null);
  }

  stat(sha256: string): Promise<BlobRef | null> {
    const b = this.#blobs.get(sha256);
    return Promise.resolve(b ? { sha256, size: b.byteLength } : null);
  }
}
