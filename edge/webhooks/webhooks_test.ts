import { createHmac } from "node:crypto";
import { assert, assertEquals } from "../../gpu-worker/testing.ts";
import { type TestEdge, testEdge, testPng } from "../testing.ts";
import { generateWebhookSecret, signWebhook, verifyWebhook } from "./signature.ts";

interface Received {
  headers: Record<string, string>;
  body: string;
}

/** A local receiver (loopback only) that answers with `statuses` in turn, then 200. */
function receiver(statuses: number[] = []) {
  const got: Received[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    got.push({ headers: Object.fromEntries(req.headers), body: await req.text() });
    return new Response("ok", { status: statuses.shift() ?? 200 });
  });
  return { got, port: server.addr.port, close: () => server.shutdown() };
}

async function runOnePrediction(t: TestEdge, webhook: string, filter?: string[]) {
  await t.worker.register();
  const p = await (await t.json("/v1/predictions", {
    base_model: "tiny-shapes",
    input: { prompt: "a green square", steps: 2 },
    webhook,
    ...(filter ? { webhook_events_filter: filter } : {}),
  })).json();
  const job = (await t.worker.lease())!;
  await t.worker.heartbeat(job, { logs: ["step 1"] });
  await t.worker.complete(job, [{ bytes: testPng(), contentType: "image/png", name: "0.png" }]);
  await t.edge.webhooks.idle();
  return p;
}

Deno.test("signature: Standard Webhooks v1 = base64 HMAC-SHA256 of id.timestamp.body with the whsec_ key", async () => {
  const secret = generateWebhookSecret();
  assert(/^whsec_[A-Za-z0-9+/]+=*$/.test(secret), secret);
  const body = '{"id":"p_1","status":"succeeded"}';
  const sig = await signWebhook(secret, "msg_1", 1_700_000_000, body);
  const hand = createHmac("sha256", Buffer.from(secret.slice(6), "base64")).update(`msg_1.1700000000.${body}`)
    .digest("base64");
  assertEquals(sig, `v1,${hand}`);
  const headers = {
    "webhook-id": "msg_1",
    "webhook-timestamp": "1700000000",
    "webhook-signature": `v1,bogus ${sig}`,
  };
  assert(await verifyWebhook(secret, headers, body, 1_700_000_010));
  assert(!(await verifyWebhook(secret, headers, body + " ", 1_700_000_010)), "a changed body fails");
  assert(!(await verifyWebhook(secret, headers, body, 1_700_001_000)), "a stale timestamp fails");
  assert(
    !(await verifyWebhook(generateWebhookSecret(), headers, body, 1_700_000_010)),
    "another secret fails",
  );
});

Deno.test("webhooks: filtered events, signed with the published secret, body is the job", async () => {
  const r = receiver();
  try {
    const t = await testEdge({ webhooksAllowPrivate: true });
    const p = await runOnePrediction(t, `http://127.0.0.1:${r.port}/hook?x=1`, ["start", "completed"]);
    const secret = (await (await t.req("/v1/webhooks/default/secret")).json()).key;
    assert(secret.startsWith("whsec_"));
    assertEquals((await (await t.req("/v1/webhooks/default/secret")).json()).key, secret, "stable");
    assert(
      (await (await t.req("/v1/webhooks/default/secret", {}, t.keyB)).json()).key !== secret,
      "per tenant",
    );
    assertEquals(r.got.length, 2);
    const [start, completed] = r.got.map((g) => ({ ...g, json: JSON.parse(g.body) }));
    assertEquals([start.json.id, start.json.status, completed.json.status], [
      p.id,
      "processing",
      "succeeded",
    ]);
    assertEquals(completed.json.output.length, 1);
    for (const g of r.got) {
      const ts = Number(g.headers["webhook-timestamp"]);
      assert(g.headers["webhook-id"].startsWith("msg_") && g.headers["webhook-signature"].startsWith("v1,"));
      assert(await verifyWebhook(secret, g.headers, g.body, ts), "verifies with the published secret");
      const hand = createHmac("sha256", Buffer.from(secret.slice(6), "base64"))
        .update(`${g.headers["webhook-id"]}.${ts}.${g.body}`).digest("base64");
      assertEquals(g.headers["webhook-signature"], `v1,${hand}`);
    }
  } finally {
    await r.close();
  }
});

Deno.test("webhooks: no delivery to loopback or private addresses unless the operator allows it", async () => {
  const r = receiver();
  try {
    const t = await testEdge();
    for (
      const url of [
        `http://127.0.0.1:${r.port}/hook`,
        "http://localhost/x",
        "http://[::ffff:192.168.0.1]/",
        "http://169.254.169.254/",
      ]
    ) {
      const res = await t.json("/v1/predictions", {
        base_model: "tiny-shapes",
        input: { prompt: "x" },
        webhook: url,
      });
      assertEquals(res.status, 422, url);
      assertEquals((await res.json()).invalid_fields[0].name, "webhook");
    }
    const resolved = await testEdge({
      webhookOptions: { retryDelaysMs: [], throttleMs: 0, resolve: () => Promise.resolve(["10.0.0.7"]) },
    });
    await runOnePrediction(resolved, "https://hooks.example.test/x");
    assertEquals(r.got.length, 0);
    const outcomes = resolved.edge.webhooks.outcomes;
    assert(
      outcomes.length >= 2 && outcomes.every((o) => !o.ok && o.attempts === 1),
      JSON.stringify(outcomes),
    );
    assert(
      outcomes.every((o) => o.error?.includes("10.0.0.7: private (10.0.0.0/8)")),
      JSON.stringify(outcomes),
    );
  } finally {
    await r.close();
  }
});

Deno.test("webhooks: the connection goes to the checked address (no second resolution)", async () => {
  const r = receiver();
  try {
    let lookups = 0;
    const t = await testEdge({
      webhooksAllowPrivate: true,
      webhookOptions: {
        retryDelaysMs: [],
        throttleMs: 0,
        resolve: (_host, type) => (lookups++, Promise.resolve(type === "A" ? ["127.0.0.1"] : [])),
      },
    });
    await runOnePrediction(t, `http://hooks.example.test:${r.port}/in`, ["completed"]);
    assertEquals(r.got.length, 1);
    assertEquals(r.got[0].headers.host, `hooks.example.test:${r.port}`);
    assertEquals(lookups, 2, "one A and one AAAA lookup per delivery, none by the HTTP client");
  } finally {
    await r.close();
  }
});

Deno.test("webhooks: retried with backoff until the receiver accepts", async () => {
  const r = receiver([500, 503]);
  try {
    const t = await testEdge({
      webhooksAllowPrivate: true,
      webhookOptions: { retryDelaysMs: [5, 10, 20], throttleMs: 0 },
    });
    await runOnePrediction(t, `http://127.0.0.1:${r.port}/`, ["completed"]);
    assertEquals(r.got.length, 3);
    assertEquals(
      new Set(r.got.map((g) => g.headers["webhook-id"])).size,
      1,
      "the same message id on every attempt",
    );
    const o = t.edge.webhooks.outcomes.at(-1)!;
    assertEquals([o.ok, o.attempts, o.status], [true, 3, 200]);
  } finally {
    await r.close();
  }
});

/** A clock for the dispatcher that moves only when told: `now` and `schedule`, then `advance(ms)`. */
class ManualClock {
  t = 1_700_000_000_000;
  #due: { at: number; fn: () => void; seq: number }[] = [];
  #seq = 0;
  now = () => this.t;
  schedule = (ms: number, fn: () => void) => {
    const entry = { at: this.t + ms, fn, seq: this.#seq++ };
    this.#due.push(entry);
    return () => void (this.#due = this.#due.filter((e) => e !== entry));
  };
  /** Moves time on by `ms`, running what falls due, in order. */
  advance(ms: number) {
    const end = this.t + ms;
    for (;;) {
      const next = this.#due.filter((e) => e.at <= end).sort((a, b) => a.at - b.at || a.seq - b.seq)[0];
      if (!next) break;
      this.#due = this.#due.filter((e) => e !== next);
      this.t = next.at;
      next.fn();
    }
    this.t = end;
  }
}

Deno.test("webhooks: logs and output are throttled to one per interval per job", async () => {
  const r = receiver();
  try {
    const clock = new ManualClock();
    const t = await testEdge({
      webhooksAllowPrivate: true,
      webhookOptions: { retryDelaysMs: [], throttleMs: 200, now: clock.now, schedule: clock.schedule },
    });
    const hooks = t.edge.webhooks;
    await t.worker.register();
    await t.json("/v1/predictions", {
      base_model: "tiny-shapes",
      input: { prompt: "x", steps: 2 },
      webhook: `http://127.0.0.1:${r.port}/`,
      webhook_events_filter: ["logs"],
    });
    const job = (await t.worker.lease())!;
    for (let i = 0; i < 5; i++) await t.worker.heartbeat(job, { logs: [`line ${i}`] });
    await hooks.delivered();
    assertEquals(
      [r.got.length, hooks.pendingCount],
      [1, 1],
      "the first at once, the rest coalesced into one",
    );
    clock.advance(199);
    await hooks.delivered();
    assertEquals([r.got.length, hooks.pendingCount], [1, 1], "nothing more within the interval");
    clock.advance(1);
    await hooks.idle();
    assertEquals([r.got.length, hooks.pendingCount], [2, 0], "the coalesced one when the interval is over");
    assert(JSON.parse(r.got[1].body).logs.includes("line 4"), "the coalesced one carries the latest logs");
    await t.worker.heartbeat(job, { logs: ["line 5"] });
    await hooks.delivered();
    assertEquals([r.got.length, hooks.pendingCount], [2, 1], "the next one waits for its own interval");
    clock.advance(200);
    await hooks.idle();
    assertEquals(r.got.length, 3);
  } finally {
    await r.close();
  }
});
