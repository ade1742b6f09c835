/**
 * The blob store on the local file system: `<root>/<aa>/<sha256>`, written to a temporary name and renamed,
 * so a reader never sees half a blob and a crash leaves no corrupt one.
 *
 * @example
 * ```ts
 * const blobs = new FsBlobStore("./data/blobs");
 * const ref = await blobs.put(bytes);
 * ```
 */
import { type BlobStore, SHA256_HEX, sha256Hex } from "../../../shared/blob_store.ts";
import type { BlobRef } from "../../../shared/worker_protocol.ts";

export class FsBlobStore implements BlobStore {
  constructor(readonly root: string) {}

  #path(sha256: string): string {
    if (!SHA256_HEX.test(sha256)) throw new TypeError(`blob key must be 64 hex digits, got "${sha256}"`);
    return `${this.root}/${sha256.slice(0, 2)}/${sha256}`;
  }

  async put(bytes: Uint8Array): Promise<BlobRef> {
    const sha256 = await sha256Hex(bytes);
    const path = this.#path(sha256);
    if (!(await this.stat(sha256))) {
      await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
      const tmp = `${path}.${crypto.randomUUID()}.tmp`;
      await Deno.writeFile(tmp, bytes);
      await Deno.rename(tmp, path);
    }
    return { sha256, size: bytes.byteLength };
  }

  async get(sha256: string): Promise<Uint8Array | null> {
    try {
      return await Deno.readFile(this.#path(sha256));
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return null;
      throw e;
    }
  }

  async stat(sha256: string): Promise<BlobRef | null> {
    try {
      return { sha256, size: (await Deno.stat(this.#path(sha256))).size };
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return null;
      throw e;
    }
  }
}
