/**
 * OpenAI-compatible image routes for clients and chat-bots that speak OpenAI's images API (its official
 * `openai` client works against them): `POST /v1/images/generations` (txt2img), `/v1/images/edits` (multipart
 * `image`: img2img; with a `mask`, inpainting where the mask is transparent), `/v1/images/variations`
 * (multipart `image`: Prompt-Free generation from the reference; 501 until a worker serves `reference_image`).
 * Each is one native prediction (`acceptPrediction`: the same checks, routing, price, idempotency and rate
 * limits) answered when it finishes, as `{created, data: [{url | b64_json}]}`; errors come in OpenAI's shape
 * (`openai_errors.ts`). `url`s are the native file URLs and need the same key to fetch.
 */
import type { Hono } from "hono";
import {
  IGNORED_OPENAI_FIELDS,
  ImagesEditFields,
  ImagesGenerationRequest,
  ImagesResponse,
  ImagesVariationFields,
} from "../../shared/openai_images.ts";
import { CreatePredictionRequest, type PredictionInput } from "../../shared/prediction.ts";
import type { PredictionFeature } from "../../shared/methods.ts";
import { requireServed } from "../capabilities.ts";
import { validate } from "../body.ts";
import { type EdgeContext, type EdgeEnv, originOf } from "../context.ts";
import { idempotency, jsonBody } from "../idempotency.ts";
import { waitForJob } from "../jobs.ts";
import { availableModels } from "../models.ts";
import { type OpenApi, route } from "../openapi.ts";
import { ApiProblem } from "../problem.ts";
import type { AdapterRecord, FileRecord } from "../records.ts";
import { isTerminal } from "../../shared/job_lifecycle.ts";
import { readMultipart, storeUpload } from "./files.ts";
import { acceptPrediction, COSTLY_HEADERS } from "./predictions.ts";

/** How long a route holds the answer for its prediction. */
export const OPENAI_WAIT_MS = 120_000;
const FORM_FIELDS_BYTES = 64 * 1024;

const invalid = (param: string, message: string, status = 400, slug = "invalid-request") =>
  new ApiProblem(status, slug, "Invalid request", message, {
    invalid_fields: [{ name: param, reason: message }],
  });

interface Target {
  baseModel: string;
  adapters: { id: string; scale: number }[];
  sliders: { id: string; scale: number }[];
}

/** `model`: `base`, `base:adapter` or `base:adapter@scale`; absent: the only base model, if there is one. */
async function resolveModel(c: EdgeContext, model: string | undefined): Promise<Target> {
  const edge = c.get("edge");
  const models = (await availableModels(edge)).map((m) => m.id);
  const m = /^([^:@]+)(?::([^@]+)(?:@(-?\d+(?:\.\d+)?))?)?$/.exec(model ?? "");
  if (model === undefined && models.length !== 1) {
    throw invalid("model", `name a base model (one of: ${models.join(", ") || "none"})`);
  }
  if (model !== undefined && !m) {
    throw invalid("model", `expected "base", "base:adapter" or "base:adapter@scale", got "${model}"`);
  }
  const baseModel = m?.[1] ?? models[0];
  if (!models.includes(baseModel)) {
    throw invalid(
      "model",
      `no base model "${baseModel}" (available: ${models.join(", ") || "none"})`,
      404,
      "model-not-found",
    );
  }
  const target: Target = { baseModel, adapters: [], sliders: [] };
  if (!m?.[2]) return target;
  const owned = (await edge.metadata.list<AdapterRecord>(["adapters", c.get("tenant").id], { limit: 1000 }))
    .items.map((i) => i.value).filter((a) => a.base_model === baseModel);
  const a = owned.find((x) => x.id === m[2]) ??
    owned.filter((x) => x.name === m[2]).sort((x, y) => (x.created_at < y.created_at ? 1 : -1))[0];
  if (!a) throw invalid("model", `no adapter "${m[2]}" for base model ${baseModel}`, 404, "model-not-found");
  const use = { id: a.id, scale: m[3] !== undefined ? Number(m[3]) : 1 };
  if (a.kind === "slider") target.sliders.push(use);
  else target.adapters.push(use);
  return target;
}

function sizeOf(size: string | undefined) {
  if (!size || size === "auto") return {};
  const [width, height] = size.split("x").map(Number);
  return { width, height };
}

type Fields = Omit<ImagesGenerationRequest, "prompt"> & { prompt?: string };

/** Runs one prediction for an images request and answers in OpenAI's shape. */
async function answer(
  c: EdgeContext,
  f: Fields,
  ignored: string[],
  feature?: { name: PredictionFeature; input: () => Promise<Partial<PredictionInput>> },
) {
  const edge = c.get("edge");
  const target = await resolveModel(c, f.model);
  // A feature no worker serves is refused before anything is stored (the upload included).
  if (feature) {
    await requireServed(edge, { kind: "prediction", baseModel: target.baseModel, features: [feature.name] });
  }
  const extra = feature ? await feature.input() : {};
  const input = {
    prompt: f.prompt ?? "",
    num_outputs: f.n,
    ...sizeOf(f.size),
    ...(f.seed !== undefined ? { seed: f.seed } : {}),
    ...(f.steps !== undefined ? { steps: f.steps } : {}),
    ...(f.guidance_scale !== undefined ? { guidance_scale: f.guidance_scale } : {}),
    ...(f.negative_prompt !== undefined ? { negative_prompt: f.negative_prompt } : {}),
    adapters: target.adapters,
    sliders: target.sliders,
    ...extra,
  };
  const body = validate(CreatePredictionRequest, { base_model: target.baseModel, input });
  const job = await acceptPrediction(c, body);
  const final = await waitForJob(edge, job, OPENAI_WAIT_MS);
  if (!isTerminal(final.state)) {
    throw new ApiProblem(
      504,
      "timeout",
      "Timeout",
      `prediction ${job.id} is still running after ${
        OPENAI_WAIT_MS / 1000
      } s; GET /v1/predictions/${job.id} ` +
        "has its result (retrying with the same Idempotency-Key waits for the same job)",
    );
  }
  if (final.state !== "succeeded") {
    const why = final.error ?? final.state;
    throw new ApiProblem(
      500,
      "prediction-failed",
      "Prediction failed",
      `prediction ${job.id}: ${why} (refunded)`,
    );
  }
  const files = (final.result?.files ?? []) as string[];
  const tenant = c.get("tenant").id;
  const data = await Promise.all(files.map(async (id) => {
    if (f.response_format === "url") return { url: `${originOf(c)}/v1/files/${id}/content` };
    const rec = await edge.metadata.get<FileRecord>(["files", tenant, id]);
    const bytes = rec ? await edge.blobs.get(rec.sha256) : null;
    if (!bytes) throw new ApiProblem(500, "about:blank", "Internal Server Error", `output ${id} is missing`);
    return { b64_json: base64(bytes) };
  }));
  const headers: Record<string, string> = { "X-Prediction-Id": job.id };
  if (ignored.length) headers["X-Ignored-Parameters"] = ignored.join(", ");
  return c.json({ created: Math.floor(final.createdAt / 1000), data }, 200, headers);
}

function base64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

const ignoredOf = (raw: Record<string, unknown>) => IGNORED_OPENAI_FIELDS.filter((k) => raw[k] !== undefined);

/** The multipart form's text fields, and one file field (`image`, or OpenAI's `image[]`). */
function formFields(form: FormData) {
  const fields: Record<string, string> = {};
  for (const [k, v] of form.entries()) if (typeof v === "string") fields[k] = v;
  const file = (name: string) => {
    const v = form.get(name) ?? form.get(`${name}[]`);
    return v instanceof File ? v : null;
  };
  return { fields, file };
}

async function uploadedImage(c: EdgeContext, file: File | null, param: string): Promise<string> {
  if (!file) throw invalid(param, `the form needs a file field "${param}" (PNG, JPEG or WebP)`);
  const rec = await storeUpload(
    c.get("edge"),
    c.get("tenant").id,
    new Uint8Array(await file.arrayBuffer()),
    file.name,
  );
  if (rec.kind !== "image") throw invalid(param, `expected an image, got a ${rec.kind}`);
  return rec.id;
}

export function openAiImageRoutes(app: Hono<EdgeEnv>, api: OpenApi): void {
  const tags = ["openai"];
  const uploadLimit = {
    maxBytes: (e: { uploadLimits: { maxBytes: number } }) => 2 * e.uploadLimits.maxBytes + FORM_FIELDS_BYTES,
  };
  const responses = { 200: { description: "OpenAI's images response", schema: ImagesResponse } };
  route(
    app,
    api,
    {
      method: "post",
      path: "/v1/images/generations",
      summary: "OpenAI-compatible: generate images (model = base, base:adapter or base:adapter@scale)",
      tags,
      auth: "api_key",
      headers: COSTLY_HEADERS,
      body: { schema: ImagesGenerationRequest },
      responses,
    },
    idempotency(),
    async (c) => {
      const raw = await jsonBody(c, ImagesGenerationRequest.passthrough());
      return await answer(c, raw, ignoredOf(raw));
    },
  );

  route(
    app,
    api,
    {
      method: "post",
      path: "/v1/images/edits",
      summary:
        "OpenAI-compatible: img2img from an uploaded image, inpainting with a mask (transparent = repaint)",
      tags,
      auth: "api_key",
      headers: COSTLY_HEADERS,
      body: { schema: ImagesEditFields, contentType: "multipart/form-data" },
      responses,
    },
    idempotency(uploadLimit),
    async (c) => {
      const form = await readMultipart(c, 2 * c.get("edge").uploadLimits.maxBytes, 'with an "image" file');
      const { fields, file } = formFields(form);
      const f = validate(ImagesEditFields, fields);
      const mask = file("mask");
      return await answer(c, f, ignoredOf(fields), {
        name: mask ? "inpainting" : "img2img",
        input: async () => ({
          image: await uploadedImage(c, file("image"), "image"),
          ...(mask ? { mask: await uploadedImage(c, mask, "mask") } : {}),
          ...(f.strength !== undefined ? { strength: f.strength } : {}),
        }),
      });
    },
  );

  route(
    app,
    api,
    {
      method: "post",
      path: "/v1/images/variations",
      summary:
        "OpenAI-compatible: variations of an uploaded image (Prompt-Free, SeeCoder; 501 where not served)",
      tags,
      auth: "api_key",
      headers: COSTLY_HEADERS,
      body: { schema: ImagesVariationFields, contentType: "multipart/form-data" },
      responses,
    },
    idempotency(uploadLimit),
    async (c) => {
      const form = await readMultipart(c, 2 * c.get("edge").uploadLimits.maxBytes, 'with an "image" file');
      const { fields, file } = formFields(form);
      const f = validate(ImagesVariationFields, fields);
      return await answer(c, f, ignoredOf(fields), {
        name: "reference_image",
        input: async () => ({ reference_image: await uploadedImage(c, file("image"), "image") }),
      });
    },
  );
}
