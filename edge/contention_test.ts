import { assert, assertEquals } from "../gpu-worker/testing.ts";
import { BrokerBusyError, type EnqueueResult, type NewJob } from "../shared/job_broker.ts";
import { KvJobBroker } from "./adapter/deno/kv_job_broker.ts";
import { MemoryJobBroker } from "./adapter/memory/job_broker.ts";
import { testEdge } from "./testing.ts";

const PRED = { base_model: "tiny-shapes", input: { prompt: "a red circle", steps: 1, num_outputs: 1 } };

Deno.test("one tenant submitting 64 predictions at once on Deno KV: every one 202, each charged once", async () => {
  const dir = await Deno.makeTempDir({ prefix: "contention-" });
  const kv = await Deno.openKv(`${dir}/kv.sqlite3`);
  try {
    const t = await testEdge({ broker: new KvJobBroker(kv) });
    const responses = await Promise.all(
      Array.from(
        { length: 64 },
        (_, i) => t.json("/v1/predictions", PRED, t.keyA, { "Idempotency-Key": `burst-${i}` }),
      ),
    );
    const statuses = responses.map((r) => r.status);
    assertEquals(statuses, Array(64).fill(202), JSON.stringify(statuses));
    const ids = new Set(await Promise.all(responses.map(async (r) => (await r.json()).id)));
    assertEquals(ids.size, 64);
    const account = await (await t.req("/v1/account")).json();
    assertEquals([account.balance, account.reserved], [10_000 - 64, 64]);
  } finally {
    kv.close();
    await Deno.remove(dir, { recursive: true });
  }
});

class BusyBroker extends MemoryJobBroker {
  busyFor = 1;
  override async enqueue(job: NewJob): Promise<EnqueueResult> {
    if (this.busyFor-- > 0) throw new BrokerBusyError(`job ${job.id}: gave up after 10 conflicting writes`);
    return await super.enqueue(job);
  }
}

Deno.test("a broker that stays contended is 503 problem+json with Retry-After; the retry is charged once", async () => {
  const broker = new BusyBroker();
  const t = await testEdge({ broker });
  const headers = { "Idempotency-Key": "busy-1" };
  const res = await t.json("/v1/predictions", PRED, t.keyA, headers);
  assertEquals(res.status, 503);
  assertEquals(res.headers.get("content-type"), "application/problem+json");
  assertEquals(res.headers.get("retry-after"), "1");
  const problem = await res.json();
  assertEquals([problem.type, problem.status], ["/docs#problem-busy", 503]);
  assertEquals((await (await t.req("/v1/account")).json()).balance, 10_000, "nothing charged");
  const retry = await t.json("/v1/predictions", PRED, t.keyA, headers);
  assertEquals(retry.status, 202, "the 503 was not stored under the Idempotency-Key");
  assertEquals(retry.headers.get("idempotent-replayed"), null);
  assertEquals((await (await t.req("/v1/account")).json()).balance, 9_999);
  assertEquals((await (await t.req("/v1/predictions")).json()).data.length, 1);
  const docs = await (await t.req("/docs", {}, null)).text();
  assert(docs.includes('id="problem-busy"'), "the problem type is documented");
});

class CountingBroker extends MemoryJobBroker {
  positionCalls = 0;
  override queuePosition(id: string): Promise<number | null> {
    this.positionCalls++;
    return super.queuePosition(id);
  }
}

Deno.test("queue_position: on single-job responses only; lists cost no queue reads", async () => {
  let tick = 1_700_000_000_000;
  const broker = new CountingBroker({ now: () => tick++ });
  const t = await testEdge({ broker });
  const created = [];
  for (let i = 0; i < 3; i++) {
    const res = await t.json("/v1/predictions", PRED);
    created.push(await res.json());
  }
  assertEquals(created.map((p) => p.queue_position), [0, 1, 2]);
  broker.positionCalls = 0;
  const list = await (await t.req("/v1/predictions")).json();
  assertEquals(list.data.length, 3);
  assert(list.data.every((p: Record<string, unknown>) => !("queue_position" in p)));
  assertEquals(broker.positionCalls, 0);
  const one = await (await t.req(`/v1/predictions/${created[1].id}`)).json();
  assertEquals([one.status, one.queue_position], ["starting", 1]);
  assertEquals(broker.positionCalls, 1);
});
