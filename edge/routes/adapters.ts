/**
 * `/v1/adapters`: the tenant's trained concepts, sliders, libraries and imports; weights download in the
 * stored (diffusers) layout or renamed for PEFT or kohya loaders.
 */
import type { Hono } from "hono";
import { Adapter, ImportAdapterRequest, WeightFormat } from "../../shared/adapters.ts";
import { JobList } from "../../shared/jobs.ts";
import { type EdgeEnv, newId, originOf, param } from "../context.ts";
import { idempotency, jsonBody } from "../idempotency.ts";
import { unknownRef } from "../jobs.ts";
import { convertLora, LoraConversionError } from "../lora_formats.ts";
import { readSafetensors } from "../../gpu-worker/models/safetensors.ts";
import { describeFullCheckpoint, isFullCheckpointFile } from "../../gpu-worker/adapters/full_checkpoint.ts";
import { requireModel } from "../models.ts";
import { type OpenApi, route } from "../openapi.ts";
import { ApiProblem } from "../problem.ts";
import { type AdapterRecord, ownedAdapter, presentAdapter } from "../records.ts";
import { COSTLY_HEADERS } from "./predictions.ts";

const KIND_OF_METHOD: Record<string, AdapterRecord["kind"]> = { concept_slider: "slider", cidm: "library" };

export function adapterRoutes(app: Hono<EdgeEnv>, api: OpenApi): void {
  const tags = ["adapters"];
  route(app, api, {
    method: "get",
    path: "/v1/adapters",
    summary: "List adapters",
    tags,
    auth: "api_key",
    query: { cursor: { description: "from a previous page's next" } },
    responses: { 200: { description: "Adapters", schema: JobList(Adapter) } },
  }, async (c) => {
    const page = await c.get("edge").metadata.list<AdapterRecord>(["adapters", c.get("tenant").id], {
      cursor: c.req.query("cursor"),
    });
    return c.json({ data: page.items.map((i) => presentAdapter(i.value, originOf(c))), next: page.next });
  });

  route(
    app,
    api,
    {
      method: "post",
      path: "/v1/adapters",
      summary: "Import an adapter from an uploaded safetensors file",
      tags,
      auth: "api_key",
      headers: COSTLY_HEADERS,
      body: { schema: ImportAdapterRequest },
      responses: { 201: { description: "Imported", schema: Adapter } },
    },
    idempotency(),
    async (c) => {
      const edge = c.get("edge");
      const tenant = c.get("tenant");
      const body = await jsonBody(c, ImportAdapterRequest);
      await requireModel(edge, body.base_model);
      const file = await edge.metadata.get<{ kind: string; sha256: string; size: number }>([
        "files",
        tenant.id,
        body.file,
      ]);
      if (!file) throw unknownRef("file", `no file "${body.file}"`);
      if (file.kind !== "safetensors") {
        throw unknownRef(
          "file",
          `file "${body.file}" is a ${file.kind}, not safetensors`,
        );
      }
      // A full DreamBooth checkpoint (this service's own download) imports as a model, not a LoRA.
      const stored = await edge.blobs.get(file.sha256);
      const weights = stored === null ? null : readSafetensors(stored, body.file);
      const fullModel = weights !== null && isFullCheckpointFile(weights);
      // Its token and class word default to the ones it was trained with.
      const info = fullModel ? describeFullCheckpoint(weights).info : {};
      const text = (v: unknown) => (typeof v === "string" && v ? v : null);
      const rec: AdapterRecord = {
        id: newId("adp"),
        tenant: tenant.id,
        name: body.name,
        kind: KIND_OF_METHOD[body.method] ?? "concept",
        method: body.method,
        base_model: body.base_model,
        token: body.token ?? text(info.token),
        class_word: body.class_word ?? text(info.class_word),
        ...(fullModel ? { full_model: true } : {}),
        source: { kind: "import", id: body.file },
        sha256: file.sha256,
        size: file.size,
        metrics: {},
        created_at: new Date(edge.now()).toISOString(),
      };
      await edge.metadata.set(["adapters", tenant.id, rec.id], rec);
      const out = presentAdapter(rec, originOf(c));
      return c.json(out, 201, { Location: out.urls.get });
    },
  );

  route(
    app,
    api,
    {
      method: "get",
      path: "/v1/adapters/:id",
      summary: "Get an adapter",
      tags,
      auth: "api_key",
      responses: { 200: { description: "The adapter", schema: Adapter } },
    },
    async (c) =>
      c.json(
        presentAdapter(await ownedAdapter(c.get("edge"), c.get("tenant").id, param(c, "id")), originOf(c)),
      ),
  );

  route(app, api, {
    method: "get",
    path: "/v1/adapters/:id/weights",
    summary: "Download the adapter's safetensors",
    description:
      "format=diffusers (default: the stored file), peft or kohya (LoRA adapters; renamed keys, same tensors).",
    tags,
    auth: "api_key",
    query: { format: { description: "diffusers | peft | kohya" } },
    responses: { 200: { description: "safetensors bytes", contentType: "application/octet-stream" } },
  }, async (c) => {
    const edge = c.get("edge");
    const a = await ownedAdapter(edge, c.get("tenant").id, param(c, "id"));
    const format = WeightFormat.safeParse(c.req.query("format") ?? "diffusers");
    if (!format.success) {
      throw new ApiProblem(
        422,
        "invalid-request",
        "Invalid request",
        `format must be one of ${WeightFormat.options.join(", ")}`,
        {
          invalid_fields: [{ name: "format", reason: `one of ${WeightFormat.options.join(", ")}` }],
        },
      );
    }
    let bytes = await edge.blobs.get(a.sha256);
    if (!bytes) {
      throw new ApiProblem(410, "gone", "Gone", `the weights of adapter ${a.id} are no longer stored`);
    }
    if (format.data !== "diffusers") {
      try {
        bytes = convertLora(bytes, format.data, `${a.name}.safetensors`);
      } catch (e) {
        if (!(e instanceof LoraConversionError)) throw e;
        throw new ApiProblem(422, "format-not-available", "Format not available", e.message);
      }
    }
    return c.body(bytes as Uint8Array<ArrayBuffer>, 200, {
      "content-type": "application/octet-stream",
      "content-length": String(bytes.byteLength),
      "content-disposition": `attachment; filename="${a.name}${
        format.data === "diffusers" ? "" : `.${format.data}`
      }.safetensors"`,
    });
  });

  route(app, api, {
    method: "delete",
    path: "/v1/adapters/:id",
    summary: "Delete an adapter",
    tags,
    auth: "api_key",
    responses: { 204: { description: "Deleted" } },
  }, async (c) => {
    const edge = c.get("edge");
    const a = await ownedAdapter(edge, c.get("tenant").id, param(c, "id"));
    await edge.metadata.delete(["adapters", a.tenant, a.id]);
    return c.body(null, 204);
  });
}
