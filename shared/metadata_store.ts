/**
 * Port: the metadata store. A small ordered key-value interface (Deno KV's shape, so Cloudflare KV/D1 and
 * a Map fit behind it): tenants, API key hashes, files, adapters, idempotency records, webhook secrets,
 * workers. Keys are tuples; `list` walks one prefix in key order. Values are JSON-serializable.
 *
 * @example
 * ```ts
 * await store.set(["files", "tnt_1", "file_1"], { id: "file_1" });
 * const created = await store.create(["idempotency", "tnt_1", "k"], { state: "pending" }, { expireInMs: 86_400_000 });
 * ```
 */
export type MetaKey = readonly (string | number)[];

export interface ListOptions {
  limit?: number;
  /** An opaque cursor from a previous page's `next`. */
  cursor?: string;
  reverse?: boolean;
}

export interface MetadataStore {
  get<T>(key: MetaKey): Promise<T | null>;
  set(key: MetaKey, value: unknown, opts?: { expireInMs?: number }): Promise<void>;
  /** Writes only when the key holds nothing (or an expired value); true when written. */
  create(key: MetaKey, value: unknown, opts?: { expireInMs?: number }): Promise<boolean>;
  delete(key: MetaKey): Promise<void>;
  list<T>(
    prefix: MetaKey,
    opts?: ListOptions,
  ): Promise<{ items: { key: MetaKey; value: T }[]; next: string | null }>;
}
