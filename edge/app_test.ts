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
