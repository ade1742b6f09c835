/**
 * `POST /v1/trainings` and `POST /v1/merges`: validate the method's input (its registry entry's schema and
 * defaults, `shared/methods.ts`), refuse with 501 a method no registered worker runs (`capabilities.ts`),
 * resolve image files and zips (entries with captions) and adapters to blobs, reserve the method's price,
 * queue the job. A succeeded training or merge makes an adapter named `destination`, described by the worker
 * that made it (see `routes/workers.ts`).
 */
import type { Hono } from "hono";
import { MERGE_METHOD_REGISTRY, TRAINING_METHOD_REGISTRY, withDefaultSteps } from "../../shared/methods.ts";
import { CreateMergeRequest, CreateTrainingRequest, Merge, Training } from "../../shared/training.ts";
import { requireServed } from "../capabilities.ts";
import { type EdgeEnv, originOf } from "../context.ts";
import { idempotency, jobId, jsonBody } from "../idempotency.ts";
import { acceptJob, announce, BlobPlan, unknownRef } from "../jobs.ts";
import { requireModel } from "../models.ts";
import { type OpenApi, route } from "../openapi.ts";
import { mergePrice, trainingPrice } from "../pricing.ts";
import type { AdapterRecord } from "../records.ts";
import { sliderPairs } from "../slider_pairs.ts";
import { jobRoutes, present } from "./jobs.ts";
import { COSTLY_HEADERS, describeAdapter } from "./predictions.ts";

export function trainingRoutes(app: Hono<EdgeEnv>, api: OpenApi): void {
  route(
    app,
    api,
    {
      method: "post",
      path: "/v1/trainings",
      summary: `Train an adapter (${Object.keys(TRAINING_METHOD_REGISTRY).join(", ")})`,
      description: [
        "input.images: image file ids or one zip file id (entries become <zip id>/<name> blobs for the worker, captions in input.captions). Costs steps x batch_size x the method's per-step price (GET /v1/account). 501 when workers for the base model are registered and none runs the method.",
        ...Object.values(TRAINING_METHOD_REGISTRY).map((m) => `${m.name}: ${m.title}.`),
      ].join(" "),
      tags: ["trainings"],
      auth: "api_key",
      headers: COSTLY_HEADERS,
      body: { schema: CreateTrainingRequest },
      responses: { 201: { description: "Accepted and queued", schema: Training } },
    },
    idempotency(),
    async (c) => {
      const edge = c.get("edge");
      const tenant = c.get("tenant");
      const body = await jsonBody(c, CreateTrainingRequest);
      await requireModel(edge, body.base_model);
      await requireServed(edge, { kind: "training", baseModel: body.base_model, method: body.method });
      const plan = new BlobPlan(edge, tenant.id);
      // The method's default steps (Custom Diffusion: 250 for one concept, 500 jointly), shown in the input.
      const input = withDefaultSteps(body.method, body.input);
      // The method's leased input (`work` of its registry entry): files as blob names, set below.
      const work: Record<string, unknown> = { ...input, destination: body.destination };
      if (input.images !== undefined) work.images = await plan.images(input.images, "input.images");
      if (body.method === "custom_diffusion") {
        const cd = body.input;
        if (cd.regularization_images) {
          work.regularization_images = await plan.images(
            cd.regularization_images,
            "input.regularization_images",
          );
        }
        if (cd.concepts) {
          work.concepts = await Promise.all(cd.concepts.map(async (k, i) => ({
            ...k,
            images: await plan.images(k.images, `input.concepts.${i}.images`),
          })));
        }
      }
      if (body.method === "concept_slider") {
        const pairs = await sliderPairs(edge, tenant.id, plan, body.input);
        if (pairs) work.pairs = pairs;
      }
      if (body.method === "cidm") {
        const libs = await edge.metadata.list<AdapterRecord>(["adapters", tenant.id], { limit: 1000 });
        const lib = libs.items.map((i) => i.value)
          .filter((a) =>
            a.kind === "library" && a.name === body.input.library && a.base_model === body.base_model
          )
          .sort((a, b) => (a.created_at < b.created_at ? 1 : -1))[0];
        work.library_adapter = lib ? plan.adapter(lib.id, { sha256: lib.sha256, size: lib.size }) : null;
      }
      work.captions = plan.captions;
      const { job, created } = await acceptJob(edge, {
        id: await jobId(c, "t"),
        tenant: tenant.id,
        kind: "training",
        baseModel: body.base_model,
        method: body.method,
        price: trainingPrice(body.method, input),
        request: {
          method: body.method,
          base_model: body.base_model,
          destination: body.destination,
          input,
          webhook: body.webhook,
          webhook_events_filter: body.webhook_events_filter,
          origin: originOf(c),
        },
        work: { input: work, blobs: plan.blobs },
      });
      if (created) announce(edge, null, job);
      const out = await present(c, job);
      return c.json(out, 201, { Location: (out.urls as { get: string }).get });
    },
  );
  jobRoutes(app, api, "training", "trainings", Training);

  route(
    app,
    api,
    {
      method: "post",
      path: "/v1/merges",
      summary: `Merge adapters into a new one (${Object.keys(MERGE_METHOD_REGISTRY).join(", ")})`,
      description: [
        "501 when workers for the adapters' base model are registered and none runs the merge method.",
        ...Object.entries(MERGE_METHOD_REGISTRY).map(([m, e]) => `${m}: ${e.title}.`),
      ].join(" "),
      tags: ["merges"],
      auth: "api_key",
      headers: COSTLY_HEADERS,
      body: { schema: CreateMergeRequest },
      responses: { 201: { description: "Accepted and queued", schema: Merge } },
    },
    idempotency(),
    async (c) => {
      const edge = c.get("edge");
      const tenant = c.get("tenant");
      const body = await jsonBody(c, CreateMergeRequest);
      const plan = new BlobPlan(edge, tenant.id);
      const parts: (ReturnType<typeof describeAdapter> & { weight: number })[] = [];
      let baseModel: string | null = null;
      for (const [i, ref] of body.adapters.entries()) {
        const id = typeof ref === "string" ? ref : ref.id;
        const a = await edge.metadata.get<AdapterRecord>(["adapters", tenant.id, id]);
        if (!a) throw unknownRef(`adapters.${i}`, `no adapter "${id}"`);
        if (baseModel !== null && a.base_model !== baseModel) {
          throw unknownRef(
            `adapters.${i}`,
            `adapter "${id}" is for ${a.base_model}, the others for ${baseModel}`,
          );
        }
        baseModel = a.base_model;
        plan.adapter(a.id, { sha256: a.sha256, size: a.size });
        parts.push({ ...describeAdapter(a), weight: typeof ref === "string" ? 1 : ref.weight });
      }
      await requireServed(edge, { kind: "merge", baseModel: baseModel!, method: body.method });
      const { job, created } = await acceptJob(edge, {
        id: await jobId(c, "m"),
        tenant: tenant.id,
        kind: "merge",
        baseModel: baseModel!,
        method: body.method,
        price: mergePrice(body.method),
        request: {
          method: body.method,
          base_model: baseModel,
          destination: body.destination,
          input: { adapters: body.adapters, mode: body.mode },
          webhook: body.webhook,
          webhook_events_filter: body.webhook_events_filter,
          origin: originOf(c),
        },
        work: {
          input: { method: body.method, adapters: parts, destination: body.destination, mode: body.mode },
          blobs: plan.blobs,
        },
      });
      if (created) announce(edge, null, job);
      const out = await present(c, job);
      return c.json(out, 201, { Location: (out.urls as { get: string }).get });
    },
  );
  jobRoutes(app, api, "merge", "merges", Merge);
}
