import { assertEquals } from "../gpu-worker/testing.ts";
import { createApp } from "./app.ts";

const MODELS = new URL("../models", import.meta.url).pathname;

Deno.test("healthz answers without auth", async () => {
  const res = await createApp({ modelsDir: MODELS }).request("/healthz");
  assertEquals(res.status, 200);
  assertEquals(await res.json(), { status: "ok" });
});

Deno.test("models lists the tiny ShapesWorld model at 64 px", async () => {
  const res = await createApp({ modelsDir: MODELS }).request("/v1/models");
  const body = await res.json();
  const tiny = body.data.find((m: { id: string }) => m.id === "tiny-shapes");
  assertEquals(tiny.resolution, 64);
});

Deno.test("unknown routes are problem+json 404s", async () => {
  const res = await createApp({ modelsDir: MODELS }).request("/nope");
  assertEquals(res.status, 404);
  assertEquals(res.headers.get("content-type"), "application/problem+json");
});

Deno.test("the playground: / redirects to it; page and script under a CSP with no inline script or eval", async () => {
  const app = createApp({ modelsDir: MODELS });
  const root = await app.request("/");
  assertEquals([root.status, root.headers.get("location")], [302, "/playground"]);
  const page = await app.request("/playground");
  assertEquals(page.status, 200);
  const csp = page.headers.get("content-security-policy") ?? "";
  const scriptSrc = csp.split(";").map((d) => d.trim()).find((d) => d.startsWith("script-src"));
  assertEquals(scriptSrc, "script-src 'self'", csp);
  const html = await page.text();
  assertEquals(html.includes('<script src="/playground/app.js"></script>'), true);
  assertEquals(/<script>/.test(html), false, "no inline script");
  const js = await app.request("/playground/app.js");
  assertEquals([js.status, js.headers.get("content-type")], [200, "text/javascript; charset=utf-8"]);
  new Function(await js.text()); // parses
});
