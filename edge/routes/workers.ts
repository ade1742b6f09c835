/**
 * The worker protocol's edge side (`shared/worker_protocol.ts`), behind the worker token: register (base
 * models, job kinds, and the methods and features served, which `capabilities.ts` checks requests against),
 * lease (only jobs of the worker's base models and kinds), heartbeat (extends the lease, relays progress,
 * previews and logs; answers `cancel: true` for canceled jobs), complete (outputs become files, or the adapter
 * record as the worker describes it; credits settle), fail (retry with backoff or refund), and
 * content-addressed blobs. A call with a lease that is no longer the job's is 409.
 */
import type { Hono, MiddlewareHandler } from "hono";
import { z } from "zod";
import { readSafetensors } from "../../gpu-worker/models/safetensors.ts";
import type { AdapterDescriptor } from "../../shared/adapters.ts";
import { SHA256_HEX } from "../../shared/blob_store.ts";
import {
  MERGE_METHOD_REGISTRY,
  type MergeMethod,
  TRAINING_METHOD_REGISTRY,
  type TrainingMethod,
} from "../../shared/methods.ts";
import { type JobRecord, StaleLeaseError } from "../../shared/job_broker.ts";
import { unservedBy } from "../../shared/methods.ts";
import {
  BlobRef,
  CompleteRequest,
  FailRequest,
  HeartbeatRequest,
  HeartbeatResponse,
  LeasedJob,
  type LeaseEnvelope,
  LeaseRequest,
  RegisterRequest,
  RegisterResponse,
} from "../../shared/worker_protocol.ts";
import { timingSafeEqual } from "../auth/api_keys.ts";
import { readBody } from "../body.ts";
import { type Edge, type EdgeEnv, newId, param, type WorkerRecord } from "../context.ts";
import { jsonBody } from "../idempotency.ts";
import { announce } from "../jobs.ts";
import { type OpenApi, route } from "../openapi.ts";
import { ApiProblem, notFound } from "../problem.ts";
import { type AdapterRecord, type FileRecord, presentJob } from "../records.ts";
import { sniffImage } from "../uploads/image_header.ts";

/** Workers are ours: their JSON is read whatever Content-Type a plain fetch() gave it. */
const LENIENT = { anyContentType: true };

export function workerAuth(): MiddlewareHandler<EdgeEnv> {
  return async (c, next) => {
    const token = /^Bearer (.+)$/i.exec(c.req.header("authorization") ?? "")?.[1] ?? "";
    if (!timingSafeEqual(token, c.get("edge").workerToken)) {
      throw new ApiProblem(401, "unauthorized", "Unauthorized", "a valid worker token is required", {
        headers: { "WWW-Authenticate": 'Bearer realm="workers"' },
      });
    }
    await next();
  };
}

const stale = (e: StaleLeaseError) => new ApiProblem(409, "stale-lease", "Stale lease", e.message);

async function leasedBy(edge: Edge, id: string, workerId: string): Promise<JobRecord> {
  const job = await edge.broker.get(id);
  if (!job) throw notFound("job", id);
  if (job.lease?.workerId !== workerId) {
    throw stale(new StaleLeaseError(id, `not leased to worker ${workerId}`));
  }
  return job;
}

async function guard<T>(p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (e) {
    if (e instanceof StaleLeaseError) throw stale(e);
    throw e;
  }
}

export const fileIdOfOutput = (job: JobRecord, i: number) => `file_${job.id.slice(2)}o${i}`;
export const adapterIdOfJob = (job: JobRecord) => `adp_${job.id.slice(2)}`;

/** The descriptor a training or merge must come with: its method and the registry's adapter kind. */
function expectedAdapter(job: JobRecord): Pick<AdapterDescriptor, "kind" | "method"> {
  if (job.kind === "merge") {
    const method = job.method as MergeMethod;
    return { kind: MERGE_METHOD_REGISTRY[method].adapterKind, method: `merge:${method}` };
  }
  const method = job.method as TrainingMethod;
  return { kind: TRAINING_METHOD_REGISTRY[method].adapterKind, method };
}

/**
 * The public result of a completion, from ids derived from the job (so repeating it is harmless); for a
 * training or merge also the worker's descriptor of the adapter, which `recordOutputs` stores as given.
 */
async function resultOf(edge: Edge, job: JobRecord, done: CompleteRequest): Promise<Record<string, unknown>> {
  for (const o of done.outputs) {
    const found = await edge.blobs.stat(o.blob.sha256);
    if (!found || found.size !== o.blob.size) {
      throw new ApiProblem(
        400,
        "missing-blob",
        "Missing blob",
        `output "${o.name}": upload blob ${o.blob.sha256} first (PUT /internal/workers/blobs)`,
      );
    }
  }
  if (job.kind === "prediction") {
    const images = done.outputs.filter((o) => o.contentType.startsWith("image/"));
    return { files: images.map((_, i) => fileIdOfOutput(job, i)) };
  }
  const weights = done.outputs.find((o) => o.name.endsWith(".safetensors"));
  if (!weights) {
    throw new ApiProblem(
      400,
      "missing-output",
      "Missing output",
      `a ${job.kind} completes with a .safetensors output`,
    );
  }
  try {
    readSafetensors((await edge.blobs.get(weights.blob.sha256))!, weights.name);
  } catch (e) {
    throw new ApiProblem(400, "invalid-safetensors", "Invalid safetensors", (e as Error).message);
  }
  const expected = expectedAdapter(job);
  const got = done.adapter;
  if (!got || got.method !== expected.method || got.kind !== expected.kind) {
    throw new ApiProblem(
      400,
      "invalid-adapter-descriptor",
      "Invalid adapter descriptor",
      `a ${job.kind} of method "${job.method}" completes with adapter {kind: "${expected.kind}", method: ` +
        `"${expected.method}", tokens, class_word}, got ${got ? JSON.stringify(got) : "none"}`,
    );
  }
  return { adapter: adapterIdOfJob(job), descriptor: got };
}

/** Records the outputs of a succeeded job: image files, or the adapter. Idempotent. */
async function recordOutputs(edge: Edge, job: JobRecord): Promise<void> {
  const created_at = new Date(job.completedAt ?? edge.now()).toISOString();
  if (job.kind === "prediction") {
    const images = job.outputs.filter((o) => o.contentType.startsWith("image/"));
    for (const [i, o] of images.entries()) {
      let size: { width?: number; height?: number } = {};
      try {
        const h = sniffImage((await edge.blobs.get(o.blob.sha256))!.subarray(0, 64 * 1024));
        size = { width: h.width, height: h.height };
      } catch { /* not an image we can size; keep the record without */ }
      const rec: FileRecord = {
        id: fileIdOfOutput(job, i),
        tenant: job.tenant,
        kind: "image",
        content_type: o.contentType,
        size: o.blob.size,
        sha256: o.blob.sha256,
        filename: o.name,
        metadata: { prediction: job.id },
        ...size,
        job: job.id,
        created_at,
      };
      await edge.metadata.set(["files", job.tenant, rec.id], rec);
    }
    return;
  }
  const weights = job.outputs.find((o) => o.name.endsWith(".safetensors"))!;
  // What the worker said it made (checked in `resultOf`), not a guess from the request. A job that succeeded
  // before completions carried it already has its record.
  const d = job.result?.descriptor as AdapterDescriptor | undefined;
  if (!d) return;
  const rec: AdapterRecord = {
    id: adapterIdOfJob(job),
    tenant: job.tenant,
    name: String(job.request.destination),
    kind: d.kind,
    method: d.method,
    base_model: job.baseModel,
    token: d.tokens[0] ?? null,
    tokens: d.tokens,
    class_word: d.class_word,
    ...(d.full_model ? { full_model: true } : {}),
    source: { kind: job.kind === "merge" ? "merge" : "training", id: job.id },
    sha256: weights.blob.sha256,
    size: weights.blob.size,
    metrics: job.metrics,
    created_at,
  };
  await edge.metadata.set(["adapters", job.tenant, rec.id], rec);
}

export function workerRoutes(app: Hono<EdgeEnv>, api: OpenApi): void {
  const tags = ["workers (internal)"];
  const doc = { tags, auth: "worker_token" as const };
  app.use("/internal/workers/*", workerAuth());

  route(app, api, {
    ...doc,
    method: "post",
    path: "/internal/workers/register",
    summary: "Register a worker for base models, job kinds, and the methods and features it serves",
    body: { schema: RegisterRequest },
    responses: { 200: { description: "Registered", schema: RegisterResponse } },
  }, async (c) => {
    const edge = c.get("edge");
    const body = await jsonBody(c, RegisterRequest, LENIENT);
    const now = new Date(edge.now()).toISOString();
    // What it serves (methods, merges, features) is kept: requests are checked against it (capabilities.ts).
    const rec: WorkerRecord = { id: newId("wkr"), ...body, registered_at: now, last_seen: now };
    await edge.metadata.set(["workers", rec.id], rec);
    return c.json({ workerId: rec.id, leaseSeconds: edge.leaseSeconds } satisfies RegisterResponse);
  });

  route(app, api, {
    ...doc,
    method: "post",
    path: "/internal/workers/lease",
    summary: "Lease the next job this worker can run",
    body: { schema: LeaseRequest },
    responses: { 200: { description: "A job", schema: LeasedJob }, 204: { description: "Nothing to do" } },
  }, async (c) => {
    const edge = c.get("edge");
    const { workerId } = await jsonBody(c, LeaseRequest, LENIENT);
    const worker = await edge.metadata.get<WorkerRecord>(["workers", workerId]);
    if (!worker) {
      throw new ApiProblem(404, "unknown-worker", "Unknown worker", `no worker ${workerId}; register again`);
    }
    for (const j of await edge.broker.reap()) announce(edge, null, j);
    const job = await edge.broker.lease({
      workerId,
      models: worker.models,
      kinds: worker.kinds,
      serves: (j) => servesJob(worker, j),
    });
    if (!job) return c.body(null, 204);
    announce(edge, null, job);
    // The work was built for this kind and method when the job was accepted (typed by `LeasedJob`'s schemas);
    // the worker parses it once with them.
    const leased: LeaseEnvelope = {
      id: job.id,
      kind: job.kind,
      leaseId: job.lease!.id,
      leaseSeconds: edge.leaseSeconds,
      attempt: job.attempt,
      baseModel: job.baseModel,
      ...(job.method ? { method: job.method } : {}),
      input: job.work.input,
      blobs: job.work.blobs,
      checkpoint: job.checkpoint,
    };
    return c.json(leased);
  });

  route(app, api, {
    ...doc,
    method: "post",
    path: "/internal/workers/jobs/:id/heartbeat",
    summary: "Extend the lease; report progress, a preview, logs, a checkpoint",
    body: { schema: HeartbeatRequest },
    responses: { 200: { description: "cancel: true when the user canceled", schema: HeartbeatResponse } },
  }, async (c) => {
    const edge = c.get("edge");
    const body = await jsonBody(c, HeartbeatRequest, LENIENT);
    const before = await leasedBy(edge, param(c, "id"), body.workerId);
    const job = await guard(edge.broker.heartbeat(before.id, body.leaseId, {
      progress: body.progress,
      logs: body.logs,
      checkpoint: body.checkpoint,
    }));
    if (body.progress) edge.events.publish(job.id, { event: "progress", data: body.progress });
    if (body.preview) {
      edge.events.publish(job.id, {
        event: "preview",
        data: { png: body.preview, step: body.progress?.step },
      });
    }
    for (const line of body.logs ?? []) {
      edge.events.publish(job.id, { event: "log", data: { message: line } });
    }
    if (body.logs?.length) {
      const origin = String(job.request.origin ?? "");
      edge.webhooks.notify(
        job,
        "logs",
        async () => presentJob((await edge.broker.get(job.id)) ?? job, origin),
      );
    }
    return c.json(
      { cancel: job.cancelRequested, leaseSeconds: edge.leaseSeconds } satisfies HeartbeatResponse,
    );
  });

  route(app, api, {
    ...doc,
    method: "post",
    path: "/internal/workers/jobs/:id/complete",
    summary: "Finish a job with its output blobs (settles its credits)",
    body: { schema: CompleteRequest },
    responses: { 204: { description: "Recorded (repeating it is harmless)" } },
  }, async (c) => {
    const edge = c.get("edge");
    const body = await jsonBody(c, CompleteRequest, LENIENT);
    const before = await leasedBy(edge, param(c, "id"), body.workerId);
    const result = await resultOf(edge, before, body);
    const after = await guard(edge.broker.complete(before.id, body.leaseId, {
      outputs: body.outputs,
      result,
      metrics: body.metrics,
    }));
    if (after.state === "succeeded") await recordOutputs(edge, after);
    announce(edge, before, after);
    return c.body(null, 204);
  });

  route(app, api, {
    ...doc,
    method: "post",
    path: "/internal/workers/jobs/:id/fail",
    summary: "Report a failed attempt (retried with backoff if retryable, else refunded)",
    body: { schema: FailRequest },
    responses: { 204: { description: "Recorded" } },
  }, async (c) => {
    const edge = c.get("edge");
    const body = await jsonBody(c, FailRequest, LENIENT);
    const before = await leasedBy(edge, param(c, "id"), body.workerId);
    const after = await guard(
      edge.broker.fail(before.id, body.leaseId, { error: body.error, retryable: body.retryable }),
    );
    announce(edge, before, after);
    return c.body(null, 204);
  });

  route(app, api, {
    ...doc,
    method: "put",
    path: "/internal/workers/blobs",
    summary: "Upload a blob (raw bytes); stored under its SHA-256",
    body: { schema: z.string().describe("raw bytes"), contentType: "application/octet-stream" },
    responses: { 200: { description: "Its reference", schema: BlobRef } },
  }, async (c) => {
    const edge = c.get("edge");
    const bytes = await readBody(c.req.raw, edge.maxWorkerBlobBytes);
    return c.json(await edge.blobs.put(bytes) satisfies BlobRef);
  });

  route(app, api, {
    ...doc,
    method: "get",
    path: "/internal/workers/blobs/:sha256",
    summary: "Download a blob",
    responses: { 200: { description: "Raw bytes", contentType: "application/octet-stream" } },
  }, async (c) => {
    const sha = param(c, "sha256");
    if (!SHA256_HEX.test(sha)) throw notFound("blob", sha);
    const bytes = await c.get("edge").blobs.get(sha);
    if (!bytes) throw notFound("blob", sha);
    return c.body(bytes as Uint8Array<ArrayBuffer>, 200, {
      "content-type": "application/octet-stream",
      "content-length": String(bytes.byteLength),
    });
  });
}

/**
 * Whether a worker can run a job (its training or merge method, every prediction feature it uses), from what
 * it registered with; a record without the lists (registered before workers advertised them) serves all.
 */
export function servesJob(worker: WorkerRecord, job: JobRecord): boolean {
  const lacks = unservedBy(worker, { kind: job.kind, method: job.method, input: job.work.input });
  return lacks.method === null && lacks.features.length === 0;
}
