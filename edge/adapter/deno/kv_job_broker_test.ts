import { assert, assertEquals, assertRejects } from "../../../gpu-worker/testing.ts";
import { runBrokerContract } from "../../../shared/broker_contract.ts";
import { BrokerBusyError, type NewJob } from "../../../shared/job_broker.ts";
import { KvJobBroker } from "./kv_job_broker.ts";

runBrokerContract({
  name: "deno kv",
  newBroker: async (o) => {
    const kv = await Deno.openKv(":memory:");
    return { broker: new KvJobBroker(kv, o), close: () => kv.close() };
  },
});

const job = (id: string, over: Partial<NewJob> = {}): NewJob => ({
  id,
  tenant: "t1",
  kind: "prediction",
  baseModel: "tiny",
  method: null,
  request: {},
  work: { input: {}, blobs: {} },
  price: 1,
  ...over,
});

/**
 * The KV seen through a spy: counts atomic commits (and those that lost), and the entries `list` yields;
 * `loseEveryCommit` makes every atomic write lose as if another writer always got there first.
 */
function spyKv(kv: Deno.Kv, o: { loseEveryCommit?: boolean } = {}) {
  const stats = { commits: 0, lost: 0, listed: 0 };
  const wrapOp = (op: Deno.AtomicOperation): Deno.AtomicOperation =>
    new Proxy(op, {
      get(target, prop) {
        if (prop === "commit") {
          return async () => {
            stats.commits++;
            if (o.loseEveryCommit) {
              stats.lost++;
              return { ok: false };
            }
            const r = await target.commit();
            if (!r.ok) stats.lost++;
            return r;
          };
        }
        const v = Reflect.get(target, prop, target);
        return typeof v === "function"
          ? (...args: unknown[]) => {
            const r = v.apply(target, args);
            return r === target ? wrapOp(target) : r;
          }
          : v;
      },
    });
  const spied = new Proxy(kv, {
    get(target, prop) {
      if (prop === "atomic") return () => wrapOp(target.atomic());
      if (prop === "list") {
        return (...args: Parameters<Deno.Kv["list"]>) => {
          const it = target.list(...args);
          const next = it.next.bind(it);
          it.next = async () => {
            const r = await next();
            if (!r.done) stats.listed++;
            return r;
          };
          return it;
        };
      }
      const v = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  return { kv: spied, stats };
}

Deno.test("kv broker: several edges on one store submitting for one tenant at once all succeed, charged once each", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const spy = spyKv(kv);
    // Each broker is one edge: its own per-tenant queue, so only the store's atomic checks order them.
    const edges = Array.from({ length: 4 }, () => new KvJobBroker(spy.kv));
    await edges[0].credit("t1", 1_000, "credits");
    const results = await Promise.all(
      Array.from({ length: 80 }, (_, i) => edges[i % edges.length].enqueue(job(`j${i}`))),
    );
    assert(results.every((r) => r.ok && r.created));
    assert(spy.stats.lost > 0, "the edges did race on the account");
    assertEquals(await edges[1].account("t1"), { balance: 920, reserved: 80 });
    const reserves = (await edges[2].ledger("t1", { limit: 1000 })).items.filter((e) => e.kind === "reserve");
    assertEquals(reserves.length, 80);
    assertEquals(new Set(reserves.map((e) => e.jobId)).size, 80);
    // Each edge's own view stays right after the others wrote (its remembered account is checked, not trusted).
    assertEquals((await edges[3].enqueue(job("last"))).ok, true);
    assertEquals(await edges[0].account("t1"), { balance: 919, reserved: 81 });
  } finally {
    kv.close();
  }
});

Deno.test("kv broker: one tenant's submissions in one process do not race each other on the account", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const spy = spyKv(kv);
    const b = new KvJobBroker(spy.kv);
    await b.credit("t1", 1_000, "credits");
    const before = spy.stats.commits;
    const results = await Promise.all(Array.from({ length: 64 }, (_, i) => b.enqueue(job(`j${i}`))));
    assert(results.every((r) => r.ok && r.created));
    assertEquals(spy.stats.lost, 0, "no write was wasted");
    assertEquals(spy.stats.commits - before, 64, "one atomic write per submission");
  } finally {
    kv.close();
  }
});

Deno.test("kv broker: when contention always wins it gives up with BrokerBusyError, writing nothing", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    await new KvJobBroker(kv).credit("t1", 100, "credits");
    const spy = spyKv(kv, { loseEveryCommit: true });
    const b = new KvJobBroker(spy.kv, { writeAttempts: 5, retryBaseMs: 1, retryMaxMs: 4 });
    const e = await assertRejects(() => b.enqueue(job("p1", { price: 10 })), BrokerBusyError);
    assert(e.message.includes("gave up after 5 conflicting writes"), e.message);
    assertEquals(spy.stats.commits, 5);
    await assertRejects(() => b.credit("t1", 5, "more"), BrokerBusyError);
    const plain = new KvJobBroker(kv);
    assertEquals(await plain.get("p1"), null);
    assertEquals(await plain.account("t1"), { balance: 100, reserved: 0 });
    assertEquals((await plain.ledger("t1")).items.map((l) => l.kind), ["credit"]);
  } finally {
    kv.close();
  }
});

Deno.test("kv broker: an account topped up by another edge is not refused from a remembered balance", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const a = new KvJobBroker(kv), other = new KvJobBroker(kv);
    await a.credit("t1", 5, "credits");
    assertEquals((await a.enqueue(job("p1", { price: 5 }))).ok, true); // a now remembers balance 0
    await other.credit("t1", 10, "top-up elsewhere");
    const r = await a.enqueue(job("p2", { price: 7 }));
    assert(r.ok && r.created);
    assertEquals(await other.account("t1"), { balance: 3, reserved: 12 });
    assertEquals(await a.enqueue(job("p3", { price: 4 })), {
      ok: false,
      reason: "insufficient_credits",
      balance: 3,
      price: 4,
    });
    const again = await a.enqueue(job("p1", { price: 5 }));
    assert(again.ok && !again.created, "a repeat is its job even when the balance would not cover it now");
  } finally {
    kv.close();
  }
});

Deno.test("kv broker: queuePosition reads a bounded number of queue entries however long the queue", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const spy = spyKv(kv);
    let t = 1_700_000_000_000;
    const b = new KvJobBroker(spy.kv, { now: () => t, queuePositionLimit: 50 });
    await b.credit("t1", 10_000, "credits");
    for (let i = 0; i < 400; i++) {
      await b.enqueue(job(`q${String(i).padStart(3, "0")}`));
      t++;
    }
    spy.stats.listed = 0;
    assertEquals(await b.queuePosition("q000"), 0);
    assertEquals(await b.queuePosition("q049"), 49);
    assertEquals(await b.queuePosition("q050"), null);
    assertEquals(await b.queuePosition("q399"), null);
    assert(spy.stats.listed <= 3 * 50, `read ${spy.stats.listed} queue entries`);
  } finally {
    kv.close();
  }
});
