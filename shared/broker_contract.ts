/**
 * The job broker's contract: one suite that every implementation runs (as hono's `runTest({ newRouter })`).
 * The clock is injected, so lease expiry and backoff are tested without sleeping.
 *
 * @example
 * ```ts
 * runBrokerContract({ name: "memory", newBroker: (o) => ({ broker: new MemoryJobBroker(o) }) });
 * ```
 */
import { assert, assertEquals, assertRejects } from "../gpu-worker/testing.ts";
import type { BrokerOptions, JobBroker, JobRecord, NewJob } from "./job_broker.ts";
import { StaleLeaseError } from "./job_broker.ts";

export interface BrokerFixture {
  broker: JobBroker;
  close?: () => void | Promise<void>;
}

export interface BrokerContractOptions {
  name: string;
  newBroker: (options: BrokerOptions) => BrokerFixture | Promise<BrokerFixture>;
}

const W1 = { workerId: "w1", models: ["tiny"], kinds: ["prediction" as const, "training" as const] };
const W2 = { ...W1, workerId: "w2" };

function job(id: string, over: Partial<NewJob> = {}): NewJob {
  return {
    id,
    tenant: "t1",
    kind: "prediction",
    baseModel: "tiny",
    method: null,
    request: { input: { prompt: "a red circle" } },
    work: { input: { prompt: "a red circle" }, blobs: {} },
    price: 10,
    ...over,
  };
}

export function runBrokerContract({ name, newBroker }: BrokerContractOptions): void {
  const test = (title: string, fn: (b: JobBroker, clock: { t: number }) => Promise<void>) =>
    Deno.test(`broker contract (${name}): ${title}`, async () => {
      const clock = { t: 1_700_000_000_000 };
      const fx = await newBroker({
        now: () => clock.t,
        leaseMs: 30_000,
        maxAttempts: 3,
        backoffMs: (a) => 1_000 * 2 ** (a - 1),
        queuePositionLimit: 3,
      });
      try {
        await fx.broker.credit("t1", 100, "test credits");
        await fn(fx.broker, clock);
      } finally {
        await fx.close?.();
      }
    });

  const kinds = async (b: JobBroker, tenant = "t1") =>
    (await b.ledger(tenant, { limit: 100 })).items.map((e) => e.kind);

  test("enqueue reserves the price; short of credits there is no job and no charge", async (b) => {
    const r = await b.enqueue(job("p1", { price: 30 }));
    assert(r.ok && r.created && r.job.state === "queued" && r.job.billing === "reserved");
    assertEquals(await b.account("t1"), { balance: 70, reserved: 30 });
    const short = await b.enqueue(job("p2", { price: 71 }));
    assertEquals(short, { ok: false, reason: "insufficient_credits", balance: 70, price: 71 });
    assertEquals(await b.get("p2"), null);
    assertEquals(await b.account("t1"), { balance: 70, reserved: 30 });
    assertEquals(await kinds(b), ["reserve", "credit"]);
  });

  test("enqueue is idempotent on the job id: one job, one charge", async (b) => {
    const first = await b.enqueue(job("p1"));
    const again = await b.enqueue(job("p1"));
    assert(first.ok && first.created && again.ok && !again.created);
    assertEquals(again.job.id, "p1");
    assertEquals((await b.account("t1")).balance, 90);
    assertEquals(await kinds(b), ["reserve", "credit"]);
  });

  test(
    "a lease only goes to a worker serving the job's base model and kind, oldest first",
    async (b, clock) => {
      await b.enqueue(job("m1", { kind: "merge" }));
      clock.t += 1;
      await b.enqueue(job("other", { baseModel: "sd15" }));
      clock.t += 1;
      await b.enqueue(job("p1"));
      clock.t += 1;
      await b.enqueue(job("p2"));
      assertEquals(await b.queuePosition("p2"), 1);
      const first = await b.lease(W1);
      assertEquals(first?.id, "p1");
      assertEquals([first?.state, first?.attempt, first?.lease?.workerId], ["leased", 1, "w1"]);
      assertEquals(first?.work.input, { prompt: "a red circle" });
      assertEquals((await b.lease(W2))?.id, "p2");
      assertEquals(await b.lease(W1), null);
      assertEquals((await b.lease({ workerId: "w3", models: ["sd15"], kinds: ["prediction"] }))?.id, "other");
      assertEquals((await b.lease({ workerId: "w4", models: ["tiny"], kinds: ["merge"] }))?.id, "m1");
    },
  );

  test(
    "a job the worker does not serve (its method) stays queued for one that does; the next one is leased",
    async (b, clock) => {
      await b.enqueue(job("cidm", { kind: "training", method: "cidm" }));
      clock.t += 1;
      await b.enqueue(job("db", { kind: "training", method: "dreambooth" }));
      // The predicate sees the whole record (its work's input too: a prediction's features).
      const dreamboothOnly = {
        ...W1,
        serves: (j: JobRecord) => j.method === "dreambooth" && j.work.input.prompt === "a red circle",
      };
      assertEquals((await b.lease(dreamboothOnly))?.id, "db");
      assertEquals(await b.lease(dreamboothOnly), null);
      assertEquals((await b.get("cidm"))?.state, "queued");
      assertEquals((await b.lease(W2))?.id, "cidm", "a worker serving everything takes it");
    },
  );

  test("complete settles once; repeating it is harmless; a stale lease cannot complete", async (b) => {
    await b.enqueue(job("p1"));
    const leased = (await b.lease(W1))!;
    await assertRejects(
      () => b.complete("p1", "not-the-lease", { outputs: [], result: {} }),
      StaleLeaseError,
    );
    const out = {
      outputs: [{ blob: { sha256: "a".repeat(64), size: 3 }, contentType: "image/png", name: "0.png" }],
    };
    const done = await b.complete("p1", leased.lease!.id, {
      ...out,
      result: { files: ["f1"] },
      metrics: { s: 1 },
    });
    assertEquals([done.state, done.billing, done.result, done.metrics], ["succeeded", "settled", {
      files: ["f1"],
    }, {
      s: 1,
    }]);
    assert(done.completedAt !== null && done.startedAt !== null);
    const again = await b.complete("p1", leased.lease!.id, { ...out, result: { files: ["f1"] } });
    assertEquals(again.state, "succeeded");
    assertEquals(await b.account("t1"), { balance: 90, reserved: 0 });
    assertEquals(await kinds(b), ["settle", "reserve", "credit"]);
    await assertRejects(
      () => b.fail("p1", leased.lease!.id, { error: "x", retryable: true }),
      StaleLeaseError,
    );
  });

  test("heartbeats extend the lease and carry progress, logs and the checkpoint", async (b, clock) => {
    await b.enqueue(job("p1"));
    const leased = (await b.lease(W1))!;
    clock.t += 20_000;
    const ckpt = { sha256: "c".repeat(64), size: 9 };
    const hb = await b.heartbeat("p1", leased.lease!.id, {
      progress: { step: 3, total: 10, loss: 0.5 },
      logs: ["step 3"],
      checkpoint: ckpt,
    });
    assertEquals([hb.progress?.step, hb.logs, hb.checkpoint, hb.cancelRequested], [
      3,
      ["step 3"],
      ckpt,
      false,
    ]);
    assertEquals(hb.lease!.expiresAt, clock.t + 30_000);
    clock.t += 20_000; // 40 s after the lease, 20 s after the heartbeat: still ours
    assertEquals(await b.lease(W2), null);
    assertEquals((await b.get("p1"))?.state, "leased");
  });

  test(
    "an expired lease is leased again with the checkpoint; the stale worker is refused",
    async (b, clock) => {
      await b.enqueue(job("p1"));
      const first = (await b.lease(W1))!;
      const ckpt = { sha256: "d".repeat(64), size: 1 };
      await b.heartbeat("p1", first.lease!.id, { checkpoint: ckpt });
      clock.t += 30_001;
      assertEquals(await b.lease(W2), null, "backing off after the lost attempt");
      clock.t += 1_000;
      const second = (await b.lease(W2))!;
      assertEquals([second.id, second.attempt, second.lease?.workerId, second.checkpoint], [
        "p1",
        2,
        "w2",
        ckpt,
      ]);
      assert(second.logs.some((l) => l.includes("lease expired")), second.logs.join("\n"));
      await assertRejects(() => b.heartbeat("p1", first.lease!.id, {}), StaleLeaseError);
      await assertRejects(
        () => b.complete("p1", first.lease!.id, { outputs: [], result: {} }),
        StaleLeaseError,
      );
      const done = await b.complete("p1", second.lease!.id, { outputs: [], result: {} });
      assertEquals(done.state, "succeeded");
    },
  );

  test(
    "retryable failures back off exponentially, then the job is dead-lettered and refunded once",
    async (b, clock) => {
      await b.enqueue(job("p1", { price: 25 }));
      for (const [attempt, wait] of [[1, 1_000], [2, 2_000]]) {
        const l = (await b.lease(W1))!;
        assertEquals(l.attempt, attempt);
        const f = await b.fail("p1", l.lease!.id, { error: `oom ${attempt}`, retryable: true });
        assertEquals([f.state, f.error, f.billing], ["queued", `oom ${attempt}`, "reserved"]);
        clock.t += wait - 1;
        assertEquals(await b.lease(W1), null, `attempt ${attempt + 1} waits ${wait} ms`);
        clock.t += 1;
      }
      const last = (await b.lease(W1))!;
      const dead = await b.fail("p1", last.lease!.id, { error: "oom 3", retryable: true });
      assertEquals([dead.state, dead.billing], ["dead", "refunded"]);
      assert(dead.error!.includes("3 attempts"), dead.error!);
      await b.fail("p1", last.lease!.id, { error: "oom 3", retryable: true });
      assertEquals(await b.account("t1"), { balance: 100, reserved: 0 });
      assertEquals(await kinds(b), ["refund", "reserve", "credit"]);
    },
  );

  test("a final failure fails at once and refunds", async (b) => {
    await b.enqueue(job("p1"));
    const l = (await b.lease(W1))!;
    const f = await b.fail("p1", l.lease!.id, { error: "bad input", retryable: false });
    assertEquals([f.state, f.error, f.billing, f.attempt], ["failed", "bad input", "refunded", 1]);
    assertEquals((await b.account("t1")).balance, 100);
  });

  test("expired leases past the last attempt are dead-lettered by reap", async (b, clock) => {
    await b.enqueue(job("p1"));
    for (let i = 0; i < 3; i++) {
      assert((await b.lease(W1)) !== null, `attempt ${i + 1}`);
      clock.t += 60_000;
      if (i < 2) assertEquals((await b.reap()).map((j) => j.state), ["queued"]);
      clock.t += 10_000; // past the backoff
    }
    const changed = await b.reap();
    assertEquals(changed.map((j: JobRecord) => [j.id, j.state]), [["p1", "dead"]]);
    assertEquals(await b.account("t1"), { balance: 100, reserved: 0 });
  });

  test("cancel: queued at once with a refund; running through the heartbeat, never charged", async (b) => {
    await b.enqueue(job("q1"));
    await b.enqueue(job("r1"));
    const running = (await b.lease(W1))!;
    const q = (await b.cancel(running.id === "q1" ? "r1" : "q1"))!;
    assertEquals([q.state, q.billing], ["canceled", "refunded"]);
    const asked = (await b.cancel(running.id))!;
    assertEquals([asked.state, asked.cancelRequested], ["leased", true]);
    await b.cancel(running.id);
    const hb = await b.heartbeat(running.id, running.lease!.id, {});
    assert(hb.cancelRequested);
    const end = await b.complete(running.id, running.lease!.id, { outputs: [], result: {} });
    assertEquals([end.state, end.billing], ["canceled", "refunded"]);
    assertEquals(await b.account("t1"), { balance: 100, reserved: 0 });
    assertEquals(await kinds(b), ["refund", "refund", "reserve", "reserve", "credit"]);
    assertEquals((await b.cancel("q1"))?.state, "canceled");
    assertEquals(await b.cancel("nope"), null);
  });

  test("a canceled job whose worker died ends canceled at lease expiry", async (b, clock) => {
    await b.enqueue(job("p1"));
    await b.lease(W1);
    await b.cancel("p1");
    clock.t += 31_000;
    assertEquals((await b.reap()).map((j) => j.state), ["canceled"]);
    assertEquals((await b.account("t1")).balance, 100);
  });

  test(
    "list: a tenant's jobs of one kind, newest first, in pages; ledgers are per tenant",
    async (b, clock) => {
      await b.credit("t2", 50, "other tenant");
      for (const id of ["a", "b", "c"]) {
        await b.enqueue(job(id));
        clock.t += 1;
      }
      await b.enqueue(job("t", { kind: "training" }));
      await b.enqueue(job("x", { tenant: "t2" }));
      const p1 = await b.list("t1", "prediction", { limit: 2 });
      assertEquals(p1.items.map((j) => j.id), ["c", "b"]);
      assert(p1.next !== null);
      const p2 = await b.list("t1", "prediction", { limit: 2, cursor: p1.next! });
      assertEquals(p2.items.map((j) => j.id), ["a"]);
      assertEquals((await b.list("t2", "prediction")).items.map((j) => j.id), ["x"]);
      assertEquals(await kinds(b, "t2"), ["reserve", "credit"]);
      assertEquals((await b.account("t2")).balance, 40);
    },
  );

  test("racing calls: a job is leased once; a racing complete and cancel move money once", async (b) => {
    await b.enqueue(job("p1"));
    const got = (await Promise.all([b.lease(W1), b.lease(W2), b.lease(W1)])).filter((j) => j !== null);
    assertEquals(got.length, 1);
    const l = got[0]!;
    await Promise.all([
      b.cancel("p1"),
      b.complete("p1", l.lease!.id, { outputs: [], result: {} }),
      b.complete("p1", l.lease!.id, { outputs: [], result: {} }),
    ]);
    const end = (await b.get("p1"))!;
    assert(end.state === "succeeded" || end.state === "canceled", end.state);
    const moves = (await kinds(b)).filter((k) => k === "settle" || k === "refund");
    assertEquals(moves.length, 1);
    assertEquals((await b.account("t1")).reserved, 0);
  });

  test("concurrent enqueues of one tenant: each accepted and charged once, never past the balance", async (b) => {
    const ids = Array.from({ length: 60 }, (_, i) => `c${i}`);
    // 60 distinct jobs and 10 repeats of some of them, all at once.
    const first = await Promise.all(
      [...ids, ...ids.slice(0, 10)].map((id) => b.enqueue(job(id, { price: 1 }))),
    );
    assert(first.every((r) => r.ok), JSON.stringify(first.find((r) => !r.ok)));
    assertEquals(first.filter((r) => r.ok && r.created).length, 60);
    assertEquals(await b.account("t1"), { balance: 40, reserved: 60 });

    // 50 more at once while jobs are canceled (refunds) and credits arrive: money moves on the same account.
    const [more] = await Promise.all([
      Promise.all(Array.from({ length: 50 }, (_, i) => b.enqueue(job(`d${i}`, { price: 1 })))),
      Promise.all(ids.slice(0, 5).map((id) => b.cancel(id))),
      Promise.all([1, 2].map(() => b.credit("t1", 1, "top-up"))),
    ]);
    const created = more.filter((r) => r.ok && r.created).length;
    const refused = more.filter((r) => !r.ok && r.reason === "insufficient_credits").length;
    assertEquals(created + refused, 50);
    assert(created >= 40 && created <= 47, `created ${created}`);
    const acc = await b.account("t1");
    assert(acc.balance >= 0, `balance ${acc.balance}`);
    assertEquals(
      acc.balance + acc.reserved,
      102,
      "credited 100 + 2; every credit is either spendable or reserved",
    );
    assertEquals(acc.reserved, 60 - 5 + created);
    const ledger = (await b.ledger("t1", { limit: 1000 })).items;
    assertEquals(ledger.filter((e) => e.kind === "reserve").length, 60 + created);
    assertEquals(ledger.filter((e) => e.kind === "refund").length, 5);
    assertEquals(ledger.reduce((sum, e) => sum + e.amount, 0), acc.balance);
    assertEquals(new Set(ledger.filter((e) => e.kind === "reserve").map((e) => e.jobId)).size, 60 + created);
  });

  test(
    "queuePosition counts the jobs ahead up to queuePositionLimit, then is unknown (null)",
    async (b, clock) => {
      for (let i = 0; i < 5; i++) {
        await b.enqueue(job(`q${i}`));
        clock.t += 1;
      }
      await b.enqueue(job("other", { kind: "training" }));
      const positions = () => Promise.all([0, 1, 2, 3, 4].map((i) => b.queuePosition(`q${i}`)));
      assertEquals(await positions(), [0, 1, 2, null, null]);
      assertEquals(await b.queuePosition("other"), 0);
      assertEquals((await b.lease({ ...W1, kinds: ["prediction"] }))?.id, "q0");
      assertEquals(await positions(), [null, 0, 1, 2, null]);
      await b.cancel("q2");
      assertEquals(await positions(), [null, 0, null, 1, 2]);
      assertEquals(await b.queuePosition("nope"), null);
    },
  );
}
