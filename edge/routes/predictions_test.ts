import { assert, assertEquals } from "../../gpu-worker/testing.ts";
import { writeSafetensors } from "../../gpu-worker/models/safetensors.ts";
import type { AdapterRecord } from "../records.ts";
import { type TestEdge, testEdge, testPng, uploadForm } from "../testing.ts";

const PRED = { base_model: "tiny-shapes", input: { prompt: "a red circle", steps: 10, num_outputs: 2 } };

async function usage(t: TestEdge, key = t.keyA) {
  return (await (await t.req("/v1/usage", {}, key)).json()).data.map((
    e: { kind: string; amount: number },
  ) => [e.kind, e.amount]);
}
async function balance(t: TestEdge, key = t.keyA) {
  return (await (await t.req("/v1/account", {}, key)).json()).balance;
}

/**
 * Reads an SSE body until `until(text so far)` holds, and returns the text; fails the test if it does not hold
 * within `deadlineMs` (or the stream ends first) instead of waiting forever.
 */
async function readUntil(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  until: (text: string) => boolean,
  what: string,
  deadlineMs = 5_000,
  text = "",
): Promise<string> {
  const decoder = new TextDecoder();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<"deadline">((r) => (timer = setTimeout(() => r("deadline"), deadlineMs)));
  try {
    while (!until(text)) {
      const chunk = await Promise.race([reader.read(), deadline]);
      assert(
        chunk !== "deadline",
        `${what}: not within ${deadlineMs} ms; the stream sent ${JSON.stringify(text)}`,
      );
      assert(!chunk.done, `${what}: the stream ended first; it sent ${JSON.stringify(text)}`);
      text += decoder.decode(chunk.value, { stream: true });
    }
    return text;
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("billing: reserve on accept, settle on success; outputs become the tenant's files", async () => {
  const t = await testEdge();
  await t.worker.register();
  const res = await t.json("/v1/predictions", PRED);
  assertEquals(res.status, 202);
  const p = await res.json();
  assertEquals([p.status, p.cost, p.output, p.queue_position], ["starting", 20, null, 0]);
  assert(p.urls.get.endsWith(`/v1/predictions/${p.id}`) && p.urls.stream.endsWith("/stream"));
  assertEquals(await balance(t), 9_980);
  const job = (await t.worker.lease())!;
  assertEquals([job.kind, job.baseModel, (job.input as { prompt: string }).prompt], [
    "prediction",
    "tiny-shapes",
    "a red circle",
  ]);
  assertEquals((await (await t.req(`/v1/predictions/${p.id}`)).json()).status, "processing");
  const done = await t.worker.complete(job, [
    { bytes: testPng(4, 4, 1), contentType: "image/png", name: "0.png" },
    { bytes: testPng(4, 4, 2), contentType: "image/png", name: "1.png" },
  ]);
  assertEquals(done.status, 204);
  const after = await (await t.req(`/v1/predictions/${p.id}`)).json();
  assertEquals([after.status, after.output.length, after.error], ["succeeded", 2, null]);
  assert(after.completed_at && after.started_at && after.metrics.predict_time >= 0);
  const img = await t.req(new URL(after.output[0]).pathname);
  assertEquals([img.status, img.headers.get("content-type")], [200, "image/png"]);
  await img.body?.cancel();
  assertEquals((await t.req(new URL(after.output[0]).pathname, {}, t.keyB)).status, 404);
  assertEquals(await balance(t), 9_980);
  assertEquals(await usage(t), [["settle", 0], ["reserve", -20], ["credit", 10_000]]);
  assertEquals((await t.worker.complete(job, [])).status, 204, "a repeated complete is harmless");
  assertEquals(await usage(t), [["settle", 0], ["reserve", -20], ["credit", 10_000]]);
  const list = await (await t.req("/v1/predictions")).json();
  assertEquals(list.data.map((x: { id: string }) => x.id), [p.id]);
});

Deno.test("billing: refunded on failure and on cancel; 402 when short, and no job", async () => {
  const t = await testEdge({}, { a: 50, b: 0 });
  await t.worker.register();
  const a = await (await t.json("/v1/predictions", PRED)).json();
  const job = (await t.worker.lease())!;
  assertEquals((await t.worker.fail(job, "bad prompt embedding", false)).status, 204);
  const failed = await (await t.req(`/v1/predictions/${a.id}`)).json();
  assertEquals([failed.status, failed.error], ["failed", "bad prompt embedding"]);
  assertEquals(await balance(t), 50);

  const b = await (await t.json("/v1/predictions", PRED)).json();
  const canceled = await (await t.req(`/v1/predictions/${b.id}/cancel`, { method: "POST" })).json();
  assertEquals(canceled.status, "canceled");
  assertEquals(await balance(t), 50);
  assertEquals((await usage(t)).map((e: [string, number]) => e[0]), [
    "refund",
    "reserve",
    "refund",
    "reserve",
    "credit",
  ]);

  const short = await t.json("/v1/predictions", { ...PRED, input: { ...PRED.input, steps: 26 } }); // 52 > 50
  assertEquals(short.status, 402);
  assertEquals(short.headers.get("content-type"), "application/problem+json");
  const p = await short.json();
  assertEquals([p.type, p.status], ["/docs#problem-insufficient-credits", 402]);
  assert(p.detail.includes("52") && p.detail.includes("50"), p.detail);
  assertEquals((await (await t.req("/v1/predictions")).json()).data.length, 2, "no job was created");
  assertEquals(await balance(t), 50);
  assertEquals((await t.json("/v1/predictions", PRED, t.keyB)).status, 402);
});

Deno.test("cancel reaches a running job through the heartbeat; it ends canceled and refunded", async () => {
  const t = await testEdge();
  await t.worker.register();
  const p = await (await t.json("/v1/predictions", PRED)).json();
  const job = (await t.worker.lease())!;
  const hb1 = await (await t.worker.heartbeat(job, { progress: { step: 1, total: 10 } })).json();
  assertEquals(hb1, { cancel: false, leaseSeconds: 60 });
  const asked = await (await t.req(`/v1/predictions/${p.id}/cancel`, { method: "POST" })).json();
  assertEquals(asked.status, "processing");
  const hb2 = await (await t.worker.heartbeat(job, { progress: { step: 2, total: 10 } })).json();
  assertEquals(hb2.cancel, true);
  await t.worker.fail(job, "canceled by the user", true);
  assertEquals((await (await t.req(`/v1/predictions/${p.id}`)).json()).status, "canceled");
  assertEquals(await balance(t), 10_000);
});

Deno.test("idempotency: the same key twice is one job and one charge; other parameters are 422", async () => {
  const t = await testEdge();
  const headers = { "Idempotency-Key": "order-42" };
  const first = await t.json("/v1/predictions", PRED, t.keyA, headers);
  const second = await t.json(
    "/v1/predictions",
    { input: PRED.input, base_model: "tiny-shapes" },
    t.keyA,
    headers,
  );
  assertEquals([first.status, second.status], [202, 202]);
  assertEquals(second.headers.get("idempotent-replayed"), "true");
  const [a, b] = [await first.json(), await second.json()];
  assertEquals(a, b);
  assertEquals((await (await t.req("/v1/predictions")).json()).data.length, 1);
  assertEquals(await balance(t), 9_980);
  const other = await t.json(
    "/v1/predictions",
    { ...PRED, input: { ...PRED.input, steps: 11 } },
    t.keyA,
    headers,
  );
  assertEquals(other.status, 422);
  assertEquals((await other.json()).type, "/docs#problem-idempotency-key-reused");
  const bobs = await t.json("/v1/predictions", PRED, t.keyB, headers);
  assertEquals(bobs.status, 202, "keys are per tenant");
  assert((await bobs.json()).id !== a.id);
  assertEquals(await balance(t), 9_980);
});

Deno.test("idempotency: a refused request is not stored, so the same key works after a fix", async () => {
  const t = await testEdge({}, { a: 10, b: 0 });
  const headers = { "Idempotency-Key": "retry-me" };
  assertEquals((await t.json("/v1/predictions", PRED, t.keyA, headers)).status, 402);
  await t.edge.broker.credit(t.tenantA, 100, "top-up");
  assertEquals((await t.json("/v1/predictions", PRED, t.keyA, headers)).status, 202);
  assertEquals(
    (await t.json("/v1/predictions", PRED, t.keyA, headers)).headers.get("idempotent-replayed"),
    "true",
  );
  assertEquals(await balance(t), 90);
});

Deno.test("validation: unknown and out-of-range fields are 422 with invalid_fields; unknown model 422", async () => {
  const t = await testEdge();
  const res = await t.json("/v1/predictions", {
    base_model: "tiny-shapes",
    input: { prompt: "x", steps: 0, colour: "red" },
  });
  assertEquals(res.status, 422);
  const names = (await res.json()).invalid_fields.map((f: { name: string }) => f.name).sort();
  assertEquals(names, ["input.colour", "input.steps"]);
  const model = await t.json("/v1/predictions", { ...PRED, base_model: "sdxl" });
  assertEquals([model.status, (await model.json()).invalid_fields[0].name], [422, "base_model"]);
  const bad = await t.req("/v1/predictions", {
    method: "POST",
    body: "{",
    headers: { "content-type": "application/json" },
  });
  assertEquals(bad.status, 400);
});

Deno.test("inpainting: a mask without its image, or of another size, is 422 naming input.mask", async () => {
  const t = await testEdge();
  const put = async (png: Uint8Array) => {
    const res = await t.req("/v1/files", { method: "POST", body: uploadForm(png, "x.png") });
    assertEquals(res.status, 201);
    return (await res.json()).id as string;
  };
  const [image, mask, small] = [
    await put(testPng(8, 8)),
    await put(testPng(8, 8, 1)),
    await put(testPng(4, 4)),
  ];
  const refusal = async (input: Record<string, unknown>) => {
    const res = await t.json("/v1/predictions", {
      base_model: "tiny-shapes",
      input: { prompt: "x", ...input },
    });
    const body = await res.json();
    return [res.status, body.invalid_fields?.[0]?.name, body.invalid_fields?.[0]?.reason];
  };
  assertEquals(await refusal({ mask }), [
    422,
    "input.mask",
    "a mask needs input.image, the image it repaints",
  ]);
  assertEquals(await refusal({ image, mask: small }), [
    422,
    "input.mask",
    "the mask is 4x4, expected the image's size 8x8",
  ]);
  const ok = await t.json("/v1/predictions", {
    base_model: "tiny-shapes",
    input: { prompt: "x", image, mask },
  });
  assertEquals(ok.status, 202);
  assertEquals((await ok.json()).input.mask, mask);
});

Deno.test("Prefer: wait answers 201 with the finished prediction, 202 when time runs out", async () => {
  const t = await testEdge();
  await t.worker.register();
  const working = (async () => {
    for (let i = 0; i < 100; i++) {
      const job = await t.worker.lease();
      if (job) {
        return await t.worker.complete(job, [{ bytes: testPng(), contentType: "image/png", name: "0.png" }]);
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  const res = await t.json("/v1/predictions", PRED, t.keyA, { Prefer: "wait=5" });
  await working;
  assertEquals(res.status, 201);
  assertEquals(res.headers.get("preference-applied"), "wait=5");
  assertEquals((await res.json()).status, "succeeded");
  const late = await t.json("/v1/predictions", PRED, t.keyA, { Prefer: "wait=1" });
  assertEquals([late.status, (await late.json()).status], [202, "starting"]);
});

Deno.test("SSE stream: status, progress, preview, log, output, done", async () => {
  const t = await testEdge();
  await t.worker.register();
  const p = await (await t.json("/v1/predictions", PRED)).json();
  const stream = await t.req(`/v1/predictions/${p.id}/stream`);
  assertEquals(stream.headers.get("content-type"), "text/event-stream");
  const reader = stream.body!.getReader();
  // lease once the stream has subscribed (its first status event is written after it subscribes)
  const opened = await readUntil(reader, (s) => s.includes("event: status"), "first status event");
  const job = (await t.worker.lease())!;
  await t.worker.heartbeat(job, {
    progress: { step: 5, total: 10, loss: 0.1, eta_s: 2 },
    preview: "iVBORw0KGgo=",
    logs: ["denoising"],
  });
  await t.worker.complete(job, [{ bytes: testPng(), contentType: "image/png", name: "0.png" }]);
  const body = await readUntil(reader, (s) => /^event: done$/m.test(s), "the done event", 5_000, opened);
  await reader.cancel();
  const events = [...body.matchAll(/^event: (\w+)$/gm)].map((m) => m[1]);
  assertEquals(events, ["status", "status", "progress", "preview", "log", "status", "output", "done"]);
  assert(
    body.includes('"step":5') && body.includes('"eta_s":2') && body.includes('"png":"iVBORw0KGgo="'),
    body,
  );
  const again = await (await t.req(`/v1/predictions/${p.id}/stream`)).text();
  assertEquals([...again.matchAll(/^event: (\w+)$/gm)].map((m) => m[1]), [
    "status",
    "progress",
    "output",
    "done",
  ]);
});

Deno.test("SSE stream sends a keep-alive comment while nothing happens", async () => {
  const t = await testEdge({ keepAliveMs: 20 });
  const p = await (await t.json("/v1/predictions", PRED)).json();
  const res = await t.req(`/v1/predictions/${p.id}/stream`);
  const reader = res.body!.getReader();
  const seen = await readUntil(reader, (s) => s.includes(": keep-alive\n\n"), "a keep-alive comment");
  await reader.cancel();
  assertEquals(
    [...seen.matchAll(/^event: (\w+)$/gm)].map((m) => m[1]),
    ["status"],
    "nothing but the status happened",
  );
  assert(seen.includes(": keep-alive\n\n"), seen);
  await t.req(`/v1/predictions/${p.id}/cancel`, { method: "POST" });
});

Deno.test("prompt routing: <name> or a trained token pulls the adapter in; the worker gets its phrase and weights", async () => {
  const t = await testEdge();
  const weights = await t.edge.blobs.put(
    writeSafetensors({ "unet.a.lora_A.weight": { dtype: "F32", shape: [1, 1], data: new Float32Array(1) } }),
  );
  const adapter = (
    id: string,
    name: string,
    token: string,
    created_at: string,
    tenant = t.tenantA,
  ): AdapterRecord => ({
    id,
    tenant,
    name,
    kind: "concept",
    method: "dreambooth",
    base_model: "tiny-shapes",
    token,
    class_word: "dog",
    source: { kind: "training", id: null },
    sha256: weights.sha256,
    size: weights.size,
    metrics: {},
    created_at,
  });
  await t.edge.metadata.set(
    ["adapters", t.tenantA, "adp_rex"],
    adapter("adp_rex", "rex", "sks", "2024-01-01"),
  );
  await t.edge.metadata.set(
    ["adapters", t.tenantA, "adp_fido"],
    adapter("adp_fido", "fido", "zwx", "2024-01-02"),
  );
  await t.edge.metadata.set(
    ["adapters", t.tenantB, "adp_bobs"],
    adapter("adp_bobs", "bobs", "qqq", "2024-01-02", t.tenantB),
  );
  await t.worker.register();

  const p = await (await t.json("/v1/predictions", {
    base_model: "tiny-shapes",
    input: { prompt: "a photo of <rex> and a zwx on a beach" },
  })).json();
  assertEquals(p.adapters, [{ id: "adp_rex", scale: 1, routed: true }, {
    id: "adp_fido",
    scale: 1,
    routed: true,
  }]);
  assertEquals(p.input.prompt, "a photo of <rex> and a zwx on a beach", "the public input is as sent");
  const job = (await t.worker.lease())!;
  const input = job.input as { prompt: string; adapters: { id: string; token: string }[] };
  assertEquals(input.prompt, "a photo of sks dog and a zwx on a beach");
  assertEquals(input.adapters.map((a) => [a.id, a.token]), [["adp_rex", "sks"], ["adp_fido", "zwx"]]);
  assertEquals((job.blobs as Record<string, { sha256: string }>).adp_rex.sha256, weights.sha256);

  const plain =
    await (await t.json("/v1/predictions", { base_model: "tiny-shapes", input: { prompt: "a <bobs> qqq" } }))
      .json();
  assertEquals(plain.adapters, [], "another tenant's adapters are never routed");
  const foreign = await t.json("/v1/predictions", {
    base_model: "tiny-shapes",
    input: { prompt: "x", adapters: [{ id: "adp_bobs" }] },
  });
  assertEquals([foreign.status, (await foreign.json()).invalid_fields[0].name], [422, "input.adapters.0.id"]);
  await t.edge.metadata.set(
    ["adapters", t.tenantA, "adp_rex2"],
    adapter("adp_rex2", "rex2", "sks", "2024-01-03"),
  );
  const ambiguous = await t.json("/v1/predictions", {
    base_model: "tiny-shapes",
    input: { prompt: "a sks dog" },
  });
  assertEquals([ambiguous.status, (await ambiguous.json()).type], [422, "/docs#problem-ambiguous-token"]);
});

Deno.test("predictions are tenant-scoped: get, cancel and stream of another tenant's are 404", async () => {
  const t = await testEdge();
  const p = await (await t.json("/v1/predictions", PRED)).json();
  for (const [path, method] of [["", "GET"], ["/cancel", "POST"], ["/stream", "GET"]]) {
    const res = await t.req(`/v1/predictions/${p.id}${path}`, { method }, t.keyB);
    assertEquals(res.status, 404, `${method} ${path}`);
    assertEquals((await res.json()).status, 404);
  }
  assertEquals(
    (await (await t.req(`/v1/predictions/${p.id}`)).json()).status,
    "starting",
    "not canceled by bob",
  );
  assertEquals((await (await t.req("/v1/predictions", {}, t.keyB)).json()).data, []);
  assertEquals((await t.req(`/v1/trainings/${p.id}`)).status, 404, "a prediction is no training");
});
