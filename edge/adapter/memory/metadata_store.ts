/**
 * The metadata store in memory (tests): a Map with keys in Deno KV's order (element by element; numbers
 * before strings), expiry checked on read against an injectable clock.
 *
 * @example
 * ```ts
 * const store = new MemoryMetadataStore();
 * await store.set(["tenants", "tnt_1"], { name: "acme" });
 * ```
 */
import type { ListOptions, MetadataStore, MetaKey } from "../../../shared/metadata_store.ts";

interface Slot {
  key: MetaKey;
  value: unknown;
  expiresAt: number | null;
}

export function compareKeys(a: MetaKey, b: MetaKey): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const [x, y] = [a[i], b[i]];
    if (typeof x !== typeof y) return typeof x === "number" ? -1 : 1;
    if (x < y) return -1;
    if (x > y) return 1;
  }
  return a.length - b.length;
}

export class MemoryMetadataStore implements MetadataStore {
  readonly #slots = new Map<string, Slot>();
  constructor(private readonly now: () => number = Date.now) {}

  #live(key: MetaKey): Slot | null {
    const s = this.#slots.get(JSON.stringify(key));
    if (!s) return null;
    if (s.expiresAt !== null && s.expiresAt <= this.now()) {
      this.#slots.delete(JSON.stringify(key));
      return null;
    }
    return s;
  }

  get<T>(key: MetaKey): Promise<T | null> {
    const s = this.#live(key);
    return Promise.resolve(s ? structuredClone(s.value) as T : null);
  }

  set(key: MetaKey, value: unknown, opts?: { expireInMs?: number }): Promise<void> {
    const expiresAt = opts?.expireInMs !== undefined ? this.now() + opts.expireInMs : null;
    this.#slots.set(JSON.stringify(key), { key: [...key], value: structuredClone(value), expiresAt });
    return Promise.resolve();
  }

  async create(key: MetaKey, value: unknown, opts?: { expireInMs?: number }): Promise<boolean> {
    if (this.#live(key)) return false;
    await this.set(key, value, opts);
    return true;
  }

  delete(key: MetaKey): Promise<void> {
    this.#slots.delete(JSON.stringify(key));
    return Promise.resolve();
  }

  list<T>(prefix: MetaKey, opts: ListOptions = {}) {
    const limit = Math.max(1, Math.min(opts.limit ?? 100, 1000));
    const all = [...this.#slots.values()]
      .filter((s) =>
        s.key.length > prefix.length && prefix.every((p, i) => s.key[i] === p) && this.#live(s.key)
      )
      .sort((a, b) => compareKeys(a.key, b.key) * (opts.reverse ? -1 : 1));
    const start = opts.cursor ? all.findIndex((s) => JSON.stringify(s.key) === opts.cursor) + 1 : 0;
    const page = all.slice(start, start + limit);
    const next = start + limit < all.length ? JSON.stringify(page[page.length - 1].key) : null;
    return Promise.resolve({
      items: page.map((s) => ({ key: s.key, value: structuredClone(s.value) as T })),
      next,
    });
  }
}
