/**
 * The metadata store on Deno KV. Values are wrapped with their expiry (KV's own `expireIn` deletes "at some
 * point after", so reads check it) and chunked when larger than KV's 64 KiB value limit.
 *
 * @example
 * ```ts
 * const store = new KvMetadataStore(await Deno.openKv("./data/kv.sqlite3"));
 * ```
 */
import type { ListOptions, MetadataStore, MetaKey } from "../../../shared/metadata_store.ts";
import { deleteChunks, getChunks, setChunks } from "./kv_chunks.ts";

interface Wrapped {
  /** The value, or absent when it lives in chunks. */
  v?: unknown;
  chunks?: number;
  exp: number | null;
}

const INLINE_BYTES = 50_000;
const chunkPrefix = (key: MetaKey): Deno.KvKey => ["_chunks", ...key];

export class KvMetadataStore implements MetadataStore {
  constructor(readonly kv: Deno.Kv, private readonly now: () => number = Date.now) {}

  async #read<T>(key: MetaKey, w: Wrapped | null): Promise<T | null> {
    if (!w || (w.exp !== null && w.exp <= this.now())) return null;
    return w.chunks ? await getChunks<T>(this.kv, chunkPrefix(key)) : w.v as T;
  }

  async get<T>(key: MetaKey): Promise<T | null> {
    return this.#read<T>(key, (await this.kv.get<Wrapped>(key as Deno.KvKey)).value);
  }

  async #write(key: MetaKey, value: unknown, expireInMs: number | undefined, onlyIfAbsent: boolean) {
    for (let i = 0; i < 20; i++) {
      const cur = await this.kv.get<Wrapped>(key as Deno.KvKey);
      const live = cur.value && (cur.value.exp === null || cur.value.exp > this.now());
      if (onlyIfAbsent && live) return false;
      const exp = expireInMs !== undefined ? this.now() + expireInMs : null;
      const op = this.kv.atomic().check(cur);
      const json = JSON.stringify(value);
      let chunks = 0;
      if (json.length > INLINE_BYTES / 3) {
        chunks = setChunks(op, chunkPrefix(key), value);
        op.set(key as Deno.KvKey, { chunks, exp } satisfies Wrapped, expOpt(expireInMs));
      } else {
        op.set(key as Deno.KvKey, { v: value, exp } satisfies Wrapped, expOpt(expireInMs));
      }
      deleteChunks(op, chunkPrefix(key), chunks, cur.value?.chunks ?? 0);
      if ((await op.commit()).ok) return true;
    }
    throw new Error(`metadata ${JSON.stringify(key)}: gave up after 20 conflicting writes`);
  }

  async set(key: MetaKey, value: unknown, opts?: { expireInMs?: number }): Promise<void> {
    await this.#write(key, value, opts?.expireInMs, false);
  }

  create(key: MetaKey, value: unknown, opts?: { expireInMs?: number }): Promise<boolean> {
    return this.#write(key, value, opts?.expireInMs, true);
  }

  async delete(key: MetaKey): Promise<void> {
    const cur = await this.kv.get<Wrapped>(key as Deno.KvKey);
    const op = this.kv.atomic().delete(key as Deno.KvKey);
    deleteChunks(op, chunkPrefix(key), 0, cur.value?.chunks ?? 0);
    await op.commit();
  }

  async list<T>(prefix: MetaKey, opts: ListOptions = {}) {
    const limit = Math.max(1, Math.min(opts.limit ?? 100, 1000));
    const it = this.kv.list<Wrapped>({ prefix: prefix as Deno.KvKey }, {
      limit,
      reverse: opts.reverse,
      cursor: opts.cursor,
    });
    const items: { key: MetaKey; value: T }[] = [];
    let seen = 0;
    for await (const e of it) {
      seen++;
      const value = await this.#read<T>(e.key as MetaKey, e.value);
      if (value !== null) items.push({ key: e.key as MetaKey, value });
    }
    return { items, next: seen === limit && it.cursor ? it.cursor : null };
  }
}

function expOpt(ms: number | undefined) {
  // KV's own expiry cleans up a while after ours; a day of slack keeps reads deciding.
  return ms !== undefined ? { expireIn: ms + 86_400_000 } : undefined;
}
