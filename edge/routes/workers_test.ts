import { assert, assertEquals } from "../../gpu-worker/testing.ts";
import { testEdge, testPng, TestWorker } from "../testing.ts";

const PRED = { base_model: "tiny-shapes", input: { prompt: "a blue star", steps: 5 } };

Deno.test("worker protocol: a lease only goes to a worker registered for the job's base model and kind", async () => {
  const t = await testEdge();
  const other = new TestWorker(t);
  await other.register(["sd15"], ["prediction"]);
  const trainer = new TestWorker(t);
  await trainer.register(["tiny-shapes"], ["training"]);
  const p = await (await t.json("/v1/predictions", PRED)).json();
  assertEquals(await other.lease(), null);
  assertEquals(await trainer.lease(), null);
  await t.worker.register(["tiny-shapes"], ["prediction"]);
  const job = (await t.worker.lease())!;
  assertEquals([job.id, job.attempt, job.leaseSeconds, job.checkpoint], [p.id, 1, 60, null]);
  assertEquals((await t.worker.call("/lease", { workerId: "wkr_unknown" })).status, 404);
  assertEquals(
    (await new TestWorker(t, "wrong-token").call("/lease", { workerId: t.worker.workerId })).status,
    401,
  );
});

Deno.test("worker protocol: an expired lease goes to another worker with the checkpoint; the stale one gets 409", async () => {
  const t = await testEdge();
  const w1 = t.worker;
  await w1.register();
  const w2 = new TestWorker(t);
  await w2.register();
  const p = await (await t.json("/v1/predictions", PRED)).json();
  const first = (await w1.lease())!;
  const ckpt = await w1.putBlob(new Uint8Array([1, 2, 3]));
  assertEquals((await w1.heartbeat(first, { checkpoint: ckpt, logs: ["step 1"] })).status, 200);
  t.clock.t += 61_000;
  assertEquals(await w2.lease(), null, "backing off");
  assertEquals((await (await t.req(`/v1/predictions/${p.id}`)).json()).status, "starting");
  t.clock.t += 2_000;
  const second = (await w2.lease())!;
  assertEquals([second.id, second.attempt, second.checkpoint], [p.id, 2, ckpt]);
  const stale = await w1.complete(first, [{ bytes: testPng(), contentType: "image/png", name: "0.png" }]);
  assertEquals(stale.status, 409);
  assertEquals((await stale.json()).type, "/docs#problem-stale-lease");
  assertEquals((await w1.heartbeat(first)).status, 409);
  const forged = await w1.call(`/jobs/${p.id}/complete`, {
    workerId: w1.workerId,
    leaseId: second.leaseId,
    outputs: [],
  });
  assertEquals(forged.status, 409, "another worker's lease id is refused");
  assertEquals(
    (await w2.complete(second, [{ bytes: testPng(), contentType: "image/png", name: "0.png" }])).status,
    204,
  );
  const done = await (await t.req(`/v1/predictions/${p.id}`)).json();
  assertEquals(done.status, "succeeded");
  assert(done.logs.includes("lease expired"), done.logs);
});

Deno.test("worker protocol: retryable failures back off, then dead-letter as failed with a refund", async () => {
  const t = await testEdge();
  await t.worker.register();
  const p = await (await t.json("/v1/predictions", PRED)).json();
  for (let attempt = 1; attempt <= 3; attempt++) {
    const job = (await t.worker.lease())!;
    assertEquals(job.attempt, attempt);
    assertEquals((await t.worker.fail(job, `out of memory ${attempt}`, true)).status, 204);
    t.clock.t += 60_000;
  }
  const dead = await (await t.req(`/v1/predictions/${p.id}`)).json();
  assertEquals(dead.status, "failed");
  assert(dead.error.includes("3 attempts"), dead.error);
  assertEquals((await (await t.req("/v1/account")).json()).balance, 10_000);
});

Deno.test("worker protocol: blobs are content-addressed; outputs must be uploaded first", async () => {
  const t = await testEdge();
  await t.worker.register();
  const ref = await t.worker.putBlob(new Uint8Array([9, 9, 9]));
  assertEquals(ref.size, 3);
  assertEquals(
    new Uint8Array(await (await t.worker.call(`/blobs/${ref.sha256}`, undefined, "GET")).arrayBuffer()),
    new Uint8Array([9, 9, 9]),
  );
  assertEquals((await t.worker.call(`/blobs/${"0".repeat(64)}`, undefined, "GET")).status, 404);
  await t.json("/v1/predictions", PRED);
  const job = (await t.worker.lease())!;
  const res = await t.worker.call(`/jobs/${job.id}/complete`, {
    workerId: t.worker.workerId,
    leaseId: job.leaseId,
    outputs: [{ blob: { sha256: "a".repeat(64), size: 1 }, contentType: "image/png", name: "0.png" }],
  });
  assertEquals([res.status, (await res.json()).type], [400, "/docs#problem-missing-blob"]);
  const plain = await t.app.request("http://edge.test/internal/workers/lease", {
    method: "POST",
    headers: { authorization: "Bearer test-worker-token" }, // a bare fetch() body: text/plain
    body: JSON.stringify({ workerId: t.worker.workerId }),
  });
  assertEquals(plain.status, 204);
});
