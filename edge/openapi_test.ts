import { assert, assertEquals } from "../gpu-worker/testing.ts";
import { createEdgeApp } from "./app.ts";
import { MODELS_DIR } from "./testing.ts";

Deno.test("openapi: every route the app serves is documented, with its schemas", async () => {
  const { app } = createEdgeApp({ modelsDir: MODELS_DIR });
  const res = await app.request("/openapi.json");
  assertEquals(res.status, 200);
  const doc = await res.json();
  assertEquals(doc.openapi, "3.1.0");
  const served = app.routes.filter((r) => r.method !== "ALL").map((r) =>
    `${r.method.toLowerCase()} ${r.path.replace(/:(\w+)/g, "{$1}")}`
  );
  const documented = Object.entries(doc.paths as Record<string, Record<string, unknown>>)
    .flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m} ${path}`));
  assertEquals([...new Set(served)].sort(), documented.sort());
  for (
    const want of [
      "get /healthz",
      "get /v1/models",
      "post /v1/files",
      "get /v1/files/{id}",
      "get /v1/files/{id}/content",
      "delete /v1/files/{id}",
      "post /v1/trainings",
      "get /v1/trainings",
      "get /v1/trainings/{id}",
      "post /v1/trainings/{id}/cancel",
      "get /v1/trainings/{id}/stream",
      "get /v1/adapters",
      "post /v1/adapters",
      "get /v1/adapters/{id}",
      "get /v1/adapters/{id}/weights",
      "delete /v1/adapters/{id}",
      "post /v1/merges",
      "post /v1/predictions",
      "get /v1/predictions",
      "get /v1/predictions/{id}",
      "post /v1/predictions/{id}/cancel",
      "get /v1/predictions/{id}/stream",
      "get /v1/account",
      "get /v1/usage",
      "get /v1/webhooks/default/secret",
      "post /internal/workers/register",
      "post /internal/workers/lease",
      "post /internal/workers/jobs/{id}/heartbeat",
      "post /internal/workers/jobs/{id}/complete",
      "post /internal/workers/jobs/{id}/fail",
      "put /internal/workers/blobs",
      "get /internal/workers/blobs/{sha256}",
      "get /openapi.json",
      "get /docs",
    ]
  ) assert(documented.includes(want), `missing ${want}`);
  const create = doc.paths["/v1/predictions"].post;
  const input = create.requestBody.content["application/json"].schema.properties.input;
  assert(
    input.properties.prompt && input.properties.adapters && input.additionalProperties === false,
    JSON.stringify(input).slice(0, 300),
  );
  assert(create.responses["202"].content["application/json"].schema.properties.urls);
  const training = doc.paths["/v1/trainings"].post.requestBody.content["application/json"].schema;
  assertEquals(training.oneOf?.length ?? training.anyOf?.length, 4);
  assert(doc.components.schemas.Problem.properties.invalid_fields);
  const html = await (await app.request("/docs")).text();
  assert(html.includes("/openapi.json") && html.includes('id="problem-insufficient-credits"'));
});
