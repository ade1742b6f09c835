/**
 * The contracts of the metadata and blob stores, run against every implementation (as the broker's).
 *
 * @example
 * ```ts
 * runMetadataStoreContract({ name: "memory", newStore: (now) => ({ store: new MemoryMetadataStore(now) }) });
 * runBlobStoreContract({ name: "memory", newStore: () => ({ store: new MemoryBlobStore() }) });
 * ```
 */
import { assert, assertEquals } from "../gpu-worker/testing.ts";
import { type BlobStore, sha256Hex } from "./blob_store.ts";
import type { MetadataStore } from "./metadata_store.ts";

interface Fixture<S> {
  store: S;
  close?: () => void | Promise<void>;
}

export function runMetadataStoreContract(o: {
  name: string;
  newStore: (now: () => number) => Fixture<MetadataStore> | Promise<Fixture<MetadataStore>>;
}): void {
  const test = (title: string, fn: (s: MetadataStore, clock: { t: number }) => Promise<void>) =>
    Deno.test(`metadata store contract (${o.name}): ${title}`, async () => {
      const clock = { t: 1_700_000_000_000 };
      const fx = await o.newStore(() => clock.t);
      try {
        await fn(fx.store, clock);
      } finally {
        await fx.close?.();
      }
    });

  test("get, set, delete", async (s) => {
    assertEquals(await s.get(["files", "t1", "f1"]), null);
    await s.set(["files", "t1", "f1"], { id: "f1", n: 1 });
    assertEquals(await s.get(["files", "t1", "f1"]), { id: "f1", n: 1 });
    await s.delete(["files", "t1", "f1"]);
    assertEquals(await s.get(["files", "t1", "f1"]), null);
  });

  test("create writes only once, and again after expiry", async (s, clock) => {
    assert(await s.create(["idem", "k"], { a: 1 }, { expireInMs: 1000 }));
    assert(!(await s.create(["idem", "k"], { a: 2 })));
    assertEquals(await s.get(["idem", "k"]), { a: 1 });
    clock.t += 1000;
    assertEquals(await s.get(["idem", "k"]), null);
    assert(await s.create(["idem", "k"], { a: 3 }));
  });

  test("list walks one prefix in key order, in pages, either way", async (s) => {
    for (const id of ["c", "a", "b"]) await s.set(["adapters", "t1", id], { id });
    await s.set(["adapters", "t2", "z"], { id: "z" });
    await s.set(["adapters_x", "t1", "y"], { id: "y" });
    const p1 = await s.list<{ id: string }>(["adapters", "t1"], { limit: 2 });
    assertEquals(p1.items.map((i) => i.value.id), ["a", "b"]);
    const p2 = await s.list<{ id: string }>(["adapters", "t1"], { limit: 2, cursor: p1.next! });
    assertEquals(p2.items.map((i) => i.value.id), ["c"]);
    const rev = await s.list<{ id: string }>(["adapters", "t1"], { reverse: true });
    assertEquals(rev.items.map((i) => i.value.id), ["c", "b", "a"]);
    assertEquals(rev.next, null);
  });

  test("large values (beyond a KV value's 64 KiB) round-trip and shrink cleanly", async (s) => {
    const big = {
      entries: Array.from({ length: 3000 }, (_, i) => ({ name: `img_${i}.png`, caption: "x".repeat(50) })),
    };
    await s.set(["files", "t1", "zip"], big);
    assertEquals(await s.get(["files", "t1", "zip"]), big);
    await s.set(["files", "t1", "zip"], { small: true });
    assertEquals(await s.get(["files", "t1", "zip"]), { small: true });
    assertEquals((await s.list(["files", "t1"])).items.length, 1);
  });
}

export function runBlobStoreContract(o: {
  name: string;
  newStore: () => Fixture<BlobStore> | Promise<Fixture<BlobStore>>;
}): void {
  Deno.test(`blob store contract (${o.name}): content-addressed put, get, stat`, async () => {
    const fx = await o.newStore();
    try {
      const bytes = new TextEncoder().encode("hello blobs");
      const ref = await fx.store.put(bytes);
      assertEquals(ref, { sha256: await sha256Hex(bytes), size: bytes.byteLength });
      assertEquals(await fx.store.put(bytes), ref);
      assertEquals(await fx.store.get(ref.sha256), bytes);
      assertEquals(await fx.store.stat(ref.sha256), ref);
      assertEquals(await fx.store.get("0".repeat(64)), null);
      assertEquals(await fx.store.stat("0".repeat(64)), null);
    } finally {
      await fx.close?.();
    }
  });
}
