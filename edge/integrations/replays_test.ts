import { assert, assertEquals, assertRejects } from "../../gpu-worker/testing.ts";
import { KvMetadataStore } from "../adapter/deno/kv_metadata_store.ts";
import { MemoryMetadataStore } from "../adapter/memory/metadata_store.ts";
import type { MetadataStore } from "../../shared/metadata_store.ts";
import { refuseReplay, REPLAY_MARGIN_MS, type VerifiedRequest } from "./replays.ts";
import { SIGNATURE_WINDOW_S, SignatureError } from "./request_signature.ts";

const TS = 1_700_000_000;
const enc = (s: string) => new TextEncoder().encode(s);
const BODY = '{"id":"1","type":2}';
const request = (body = BODY, timestamp = String(TS)): VerifiedRequest => ({
  platform: "discord",
  timestamp,
  body: enc(body),
});

/** Each case on the in-memory store and on Deno KV, both on a clock the test moves. */
function bothStores(name: string, fn: (store: MetadataStore, clock: { t: number }) => Promise<void>) {
  Deno.test(`replays (memory): ${name}`, () => {
    const clock = { t: TS * 1000 };
    return fn(new MemoryMetadataStore(() => clock.t), clock);
  });
  Deno.test(`replays (kv): ${name}`, async () => {
    const clock = { t: TS * 1000 };
    const kv = await Deno.openKv(":memory:");
    try {
      await fn(new KvMetadataStore(kv, () => clock.t), clock);
    } finally {
      kv.close();
    }
  });
}

bothStores("the first arrival is accepted, the same signed request again is refused", async (s, clock) => {
  await refuseReplay(s, request(), clock.t);
  clock.t += 42_000;
  const e = await assertRejects(() => refuseReplay(s, request(), clock.t), SignatureError);
  assert(e.message.includes("already received 42 s ago: a replay"), e.message);
  // Still refused, however often it comes.
  await assertRejects(() => refuseReplay(s, request(), clock.t), SignatureError);
});

bothStores("another body, another timestamp or the other platform is another request", async (s, clock) => {
  await refuseReplay(s, request(), clock.t);
  await refuseReplay(s, request('{"id":"2","type":2}'), clock.t);
  await refuseReplay(s, request(undefined, String(TS + 1)), clock.t);
  await refuseReplay(s, { ...request(), platform: "slack" }, clock.t);
  // Timestamp and body are kept apart: "170000000" + "0{..." is not "1700000000" + "{...".
  await refuseReplay(s, request(`0${BODY}`, String(TS / 10)), clock.t);
  for (const r of [request(), request('{"id":"2","type":2}'), { ...request(), platform: "slack" as const }]) {
    await assertRejects(() => refuseReplay(s, r, clock.t), SignatureError);
  }
});

bothStores("the record lasts until the timestamp is out of the window, then expires", async (s, clock) => {
  await refuseReplay(s, request(), clock.t);
  // Past the window the route refuses the timestamp itself; the record outlives it by the margin only.
  clock.t = (TS + SIGNATURE_WINDOW_S) * 1000 + REPLAY_MARGIN_MS - 1;
  await assertRejects(() => refuseReplay(s, request(), clock.t), SignatureError);
  clock.t += 1;
  await refuseReplay(s, request(), clock.t);
  await assertRejects(() => refuseReplay(s, request(), clock.t), SignatureError);
});

bothStores(
  "a timestamp ahead of the server's clock is remembered for as long as it is fresh",
  async (s, clock) => {
    // The platform's clock is 200 s ahead: its timestamp is accepted here for 500 s, not 300.
    clock.t = (TS - 200) * 1000;
    await refuseReplay(s, request(), clock.t);
    clock.t += 400_000;
    const e = await assertRejects(() => refuseReplay(s, request(), clock.t), SignatureError);
    assert(e.message.includes("400 s ago"), e.message);
    clock.t = (TS + SIGNATURE_WINDOW_S) * 1000 + REPLAY_MARGIN_MS;
    await refuseReplay(s, request(), clock.t);
  },
);

Deno.test("replays (kv): two edges on one KV agree; of simultaneous arrivals one is accepted", async () => {
  // One Deno.Kv handle behind two stores, as edges share one KV (a local SQLite file opened twice in one
  // process answers "database is locked" instead of waiting, so the file is not opened twice here).
  const kv = await Deno.openKv(":memory:");
  try {
    const edges = [new KvMetadataStore(kv), new KvMetadataStore(kv)];
    const now = TS * 1000;
    const results = await Promise.allSettled(
      Array.from({ length: 8 }, (_, i) => refuseReplay(edges[i % 2], request(), now)),
    );
    assertEquals(results.filter((r) => r.status === "fulfilled").length, 1);
    for (const r of results) {
      if (r.status === "rejected") assert(r.reason instanceof SignatureError, String(r.reason));
    }
    // And one edge's record refuses the request on the other.
    await refuseReplay(edges[0], request("other"), now);
    await assertRejects(() => refuseReplay(edges[1], request("other"), now), SignatureError);
  } finally {
    kv.close();
  }
});
