import { assert, assertEquals } from "../gpu-worker/testing.ts";
import { generateApiKey } from "./auth/api_keys.ts";
import { testEdge } from "./testing.ts";

Deno.test("auth: missing, malformed, bad-checksum and unknown keys are 401 problems", async () => {
  const t = await testEdge();
  const typo = t.keyA.slice(0, 12) + (t.keyA[12] === "x" ? "y" : "x") + t.keyA.slice(13);
  for (const key of [null, "nope", typo, generateApiKey()]) {
    const res = await t.req("/v1/account", {}, key);
    assertEquals(res.status, 401, `key ${key}`);
    assertEquals(res.headers.get("content-type"), "application/problem+json");
    assert(res.headers.get("www-authenticate")?.startsWith("Bearer"));
    const p = await res.json();
    assertEquals([p.status, p.title], [401, "Unauthorized"]);
  }
  const ok = await t.req("/v1/account");
  assertEquals(ok.status, 200);
  const account = await ok.json();
  assertEquals([account.tenant.name, account.balance, account.reserved], ["alice", 10_000, 0]);
  assertEquals((await (await t.req("/v1/account", {}, t.keyB)).json()).tenant.name, "bob");
});

Deno.test("health and models need no key; the worker protocol needs the worker token", async () => {
  const t = await testEdge();
  assertEquals((await t.req("/healthz", {}, null)).status, 200);
  assertEquals((await t.req("/v1/models", {}, null)).status, 200);
  const res = await t.req("/internal/workers/register", { method: "POST", body: "{}" }, t.keyA);
  assertEquals(res.status, 401);
});

Deno.test("rate limits: 429 with Retry-After, RateLimit-Policy and RateLimit, per key", async () => {
  const t = await testEdge({ rateLimit: { limit: 3, windowMs: 60_000 } });
  t.clock.t = 1_700_000_020_000; // 40 s into a 60 s window
  for (let i = 0; i < 3; i++) {
    const res = await t.req("/v1/account");
    assertEquals(res.status, 200);
    assertEquals(res.headers.get("ratelimit-policy"), '"default";q=3;w=60');
    assertEquals(res.headers.get("ratelimit"), `"default";r=${2 - i};t=20`);
    await res.body?.cancel();
  }
  const limited = await t.req("/v1/account");
  assertEquals(limited.status, 429);
  assertEquals(limited.headers.get("retry-after"), "20");
  assertEquals(limited.headers.get("ratelimit"), '"default";r=0;t=20');
  assertEquals((await limited.json()).type, "/docs#problem-rate-limited");
  assertEquals((await t.req("/v1/account", {}, t.keyB)).status, 200, "another key has its own window");
  t.clock.t += 20_000;
  assertEquals((await t.req("/v1/account")).status, 200, "a new window");
});
