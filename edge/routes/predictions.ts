/**
 * `POST /v1/predictions`: validates the input, refuses with 501 an optional feature (sliders, regions,
 * reference_image, img2img: `shared/methods.ts`) that no registered worker for the base model serves, routes
 * adapters named in the prompt, resolves file and adapter ids to blobs, reserves the price and queues the job; `Prefer: wait[=N]` holds the answer until the
 * prediction ends (201) or N seconds pass (202).
 */
import type { Hono } from "hono";
import { isTerminal } from "../../shared/job_lifecycle.ts";
import { predictionFeatures } from "../../shared/methods.ts";
import { CreatePredictionRequest, Prediction, type PredictionWork } from "../../shared/prediction.ts";
import { requireServed } from "../capabilities.ts";
import { type EdgeContext, type EdgeEnv, originOf } from "../context.ts";
import { idempotency, jobId, jsonBody } from "../idempotency.ts";
import { acceptJob, announce, BlobPlan, preferWaitMs, unknownRef, waitForJob } from "../jobs.ts";
import { requireModel } from "../models.ts";
import { type OpenApi, route } from "../openapi.ts";
import { predictionPrice } from "../pricing.ts";
import { routePrompt } from "../prompt_routing.ts";
import type { AdapterRecord } from "../records.ts";
import { ApiProblem } from "../problem.ts";
import { fullModelConflict } from "../../shared/adapters.ts";
import { jobRoutes, present } from "./jobs.ts";

export const COSTLY_HEADERS = {
  "Idempotency-Key": {
    description: "Replays the first response for 24 h; the same key with other parameters is 422",
  },
};

/** What a worker needs to know of an adapter besides its weights blob (named by its id). */
export function describeAdapter(a: AdapterRecord) {
  return {
    id: a.id,
    name: a.name,
    kind: a.kind,
    method: a.method,
    token: a.token,
    tokens: a.tokens ?? (a.token ? [a.token] : []),
    class_word: a.class_word,
    full_model: a.full_model ?? false,
  };
}

const invalidMask = (reason: string) =>
  new ApiProblem(422, "invalid-request", "Invalid request", `input.mask: ${reason}`, {
    invalid_fields: [{ name: "input.mask", reason }],
  });

/** A full fine-tune is a whole model: at most one per prediction, and only at scale 1. */
function checkFullModels(used: { id: string; scale: number }[], byId: Map<string, AdapterRecord>) {
  const reason = fullModelConflict(used.filter((a) => byId.get(a.id)?.full_model));
  if (reason) {
    throw new ApiProblem(422, "invalid-request", "Invalid request", `input.adapters: ${reason}`, {
      invalid_fields: [{ name: "input.adapters", reason }],
    });
  }
}

/**
 * Checks a prediction request (model, served features, adapter and slider ids, routing), resolves its blobs,
 * reserves its price and queues it; returns the job and whether this call created it. The native route and
 * the OpenAI-compatible ones share it.
 */
export async function acceptPrediction(c: EdgeContext, body: CreatePredictionRequest) {
  const edge = c.get("edge");
  const tenant = c.get("tenant");
  const input = body.input;
  await requireModel(edge, body.base_model);
  await requireServed(edge, {
    kind: "prediction",
    baseModel: body.base_model,
    features: predictionFeatures(input),
  });
  const owned = (await edge.metadata.list<AdapterRecord>(["adapters", tenant.id], { limit: 1000 })).items
    .map((i) => i.value);
  const byId = new Map(owned.map((a) => [a.id, a]));
  const check = (id: string, field: string) => {
    const a = byId.get(id);
    if (!a) throw unknownRef(field, `no adapter "${id}"`);
    if (a.base_model !== body.base_model) {
      throw unknownRef(
        field,
        `adapter "${id}" is for base model ${a.base_model}`,
      );
    }
    return a;
  };
  input.adapters.forEach((a, i) => check(a.id, `input.adapters.${i}.id`));
  input.sliders.forEach((s, i) => {
    const a = check(s.id, `input.sliders.${i}.id`);
    if (a.kind !== "slider") {
      throw new ApiProblem(
        422,
        "not-a-slider",
        "Not a slider",
        `input.sliders.${i}.id: "${s.id}" is a ${a.kind}, not a slider (list it in input.adapters)`,
        {
          invalid_fields: [{
            name: `input.sliders.${i}.id`,
            reason: `a ${a.kind} adapter, not a slider`,
          }],
        },
      );
    }
  });
  input.regions.forEach((r, i) =>
    r.adapters?.forEach((id, j) => check(id, `input.regions.${i}.adapters.${j}`))
  );
  const routed = routePrompt(input.prompt, input, owned, body.base_model);
  checkFullModels(routed.adapters, byId);

  const plan = new BlobPlan(edge, tenant.id);
  if (input.mask && !input.image) throw invalidMask("a mask needs input.image, the image it repaints");
  if (input.image) await plan.image(input.image, "input.image");
  if (input.mask) {
    await plan.image(input.mask, "input.mask");
    const [m, i] = [plan.sizes[input.mask], plan.sizes[input.image!]];
    if (m && i && (m.width !== i.width || m.height !== i.height)) {
      throw invalidMask(
        `the mask is ${m.width}x${m.height}, expected the image's size ${i.width}x${i.height}`,
      );
    }
  }
  if (input.reference_image) await plan.image(input.reference_image, "input.reference_image");
  const used = new Set([...routed.adapters, ...routed.sliders].map((a) => a.id));
  for (const r of input.regions) for (const id of r.adapters ?? []) used.add(id);
  for (const id of used) plan.adapter(id, { sha256: byId.get(id)!.sha256, size: byId.get(id)!.size });

  const { job, created } = await acceptJob(edge, {
    id: await jobId(c, "p"),
    tenant: tenant.id,
    kind: "prediction",
    baseModel: body.base_model,
    method: null,
    price: predictionPrice(input),
    request: {
      base_model: body.base_model,
      input,
      adapters: [
        ...routed.adapters,
        ...routed.sliders.map(({ id, scale, routed }) => ({ id, scale, routed })),
      ],
      webhook: body.webhook,
      webhook_events_filter: body.webhook_events_filter,
      origin: originOf(c),
    },
    work: {
      input: {
        ...input,
        prompt: routed.prompt,
        adapters: routed.adapters.map((a) => ({ ...describeAdapter(byId.get(a.id)!), scale: a.scale })),
        sliders: routed.sliders.map((s) => ({
          ...describeAdapter(byId.get(s.id)!),
          scale: s.scale,
          start_step: s.start_step,
        })),
        // Regions keep their adapter ids (PredictionInput's shape); what those adapters are is here:
        region_adapters: [...new Set(input.regions.flatMap((r) => r.adapters ?? []))]
          .map((id) => describeAdapter(byId.get(id)!)),
      } satisfies PredictionWork,
      blobs: plan.blobs,
    },
  });
  if (created) announce(edge, null, job);
  return job;
}

export function predictionRoutes(app: Hono<EdgeEnv>, api: OpenApi): void {
  route(
    app,
    api,
    {
      method: "post",
      path: "/v1/predictions",
      summary: "Generate images",
      description:
        "A prompt naming <adapter-name> or an adapter's token pulls that adapter in. Costs num_outputs x steps credits (x 512x512 tiles), reserved now, refunded if it fails. 501 when workers for the base model are registered and none serves an optional feature the input uses (img2img, sliders, regions, reference_image).",
      tags: ["predictions"],
      auth: "api_key",
      headers: {
        ...COSTLY_HEADERS,
        Prefer: { description: "wait or wait=1..60: answer when finished (201) or after N s (202)" },
      },
      body: { schema: CreatePredictionRequest },
      responses: {
        201: { description: "Finished within Prefer: wait", schema: Prediction },
        202: { description: "Accepted and queued", schema: Prediction },
      },
    },
    idempotency(),
    async (c) => {
      const edge = c.get("edge");
      const job = await acceptPrediction(c, await jsonBody(c, CreatePredictionRequest));
      const wait = preferWaitMs(c.req.header("prefer"));
      const final = wait ? await waitForJob(edge, job, wait) : job;
      const out = await present(c, final);
      const headers: Record<string, string> = { Location: (out.urls as { get: string }).get };
      if (wait) headers["Preference-Applied"] = `wait=${wait / 1000}`;
      return c.json(out, wait && isTerminal(final.state) ? 201 : 202, headers);
    },
  );
  jobRoutes(app, api, "prediction", "predictions", Prediction);
}
