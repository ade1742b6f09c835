/**
 * Test fixtures for the edge: an app on the in-memory adapters with two tenants, a request helper, a worker
 * that speaks the protocol through `app.request`, and small images.
 *
 * @example
 * ```ts
 * const t = await testEdge();
 * const res = await t.req("/v1/account", {}, t.keyA);
 * ```
 */
import { encode } from "fast-png";
import type { AdapterDescriptor } from "../shared/adapters.ts";
import {
  MERGE_METHOD_REGISTRY,
  MERGE_METHODS,
  type MergeMethod,
  PREDICTION_FEATURES,
  TRAINING_METHOD_REGISTRY,
  TRAINING_METHODS,
  type TrainingMethod,
} from "../shared/methods.ts";
import type { RegisterRequest } from "../shared/worker_protocol.ts";
import { createEdgeApp, type EdgeApp } from "./app.ts";
import { issueApiKey } from "./auth/api_keys.ts";
import type { EdgeConfig } from "./context.ts";

export interface TestEdge extends EdgeApp {
  keyA: string;
  keyB: string;
  tenantA: string;
  tenantB: string;
  clock: { t: number };
  req(path: string, init?: RequestInit, key?: string | null): Promise<Response>;
  json(path: string, body: unknown, key?: string | null, headers?: Record<string, string>): Promise<Response>;
  worker: TestWorker;
}

export const MODELS_DIR = new URL("../models", import.meta.url).pathname;

export async function testEdge(
  config: Partial<EdgeConfig> = {},
  credits = { a: 10_000, b: 10_000 },
): Promise<TestEdge> {
  const clock = { t: 1_700_000_000_000 };
  const e = createEdgeApp({
    modelsDir: MODELS_DIR,
    workerToken: "test-worker-token",
    now: () => clock.t,
    webhookOptions: { retryDelaysMs: [], throttleMs: 0 },
    ...config,
  });
  const a = await issueApiKey(e.edge.metadata, e.edge.broker, { tenantName: "alice", credits: credits.a });
  const b = await issueApiKey(e.edge.metadata, e.edge.broker, { tenantName: "bob", credits: credits.b });
  const req = (path: string, init: RequestInit = {}, key: string | null = a.key) => {
    const headers = new Headers(init.headers);
    if (key) headers.set("authorization", `Bearer ${key}`);
    return Promise.resolve(e.app.request(`http://edge.test${path}`, { ...init, headers }));
  };
  const json = (
    path: string,
    body: unknown,
    key: string | null = a.key,
    headers: Record<string, string> = {},
  ) =>
    req(path, {
      method: "POST",
      body: JSON.stringify(body),
      headers: { "content-type": "application/json", ...headers },
    }, key);
  const t: TestEdge = {
    ...e,
    keyA: a.key,
    keyB: b.key,
    tenantA: a.tenant.id,
    tenantB: b.tenant.id,
    clock,
    req,
    json,
    worker: null!,
  };
  t.worker = new TestWorker(t);
  return t;
}

/** Everything the registry knows: a test worker serves every method and feature unless told otherwise. */
export const SERVES_ALL: Pick<RegisterRequest, "methods" | "merges" | "features"> = {
  methods: [...TRAINING_METHODS],
  merges: [...MERGE_METHODS],
  features: [...PREDICTION_FEATURES],
};

/**
 * A worker speaking the protocol over `app.request`, as gpu-worker/worker.ts does over the network. It
 * serves what it is told (default: every method and feature), and completes trainings and merges with the
 * descriptor a test gives (default: the method's adapter kind, no tokens, no class word).
 */
export class TestWorker {
  workerId = "";
  constructor(private readonly t: EdgeApp, readonly token = "test-worker-token") {}

  call(path: string, body?: unknown, method = "POST"): Promise<Response> {
    return Promise.resolve(this.t.app.request(`http://edge.test/internal/workers${path}`, {
      method,
      headers: { authorization: `Bearer ${this.token}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    }));
  }

  async register(
    models = ["tiny-shapes"],
    kinds = ["prediction", "training", "merge"],
    serves: Partial<Pick<RegisterRequest, "methods" | "merges" | "features">> = SERVES_ALL,
  ): Promise<string> {
    const res = await this.call("/register", {
      name: "test",
      models,
      kinds,
      executionProvider: "cpu",
      ...serves,
    });
    if (res.status !== 200) throw new Error(`register: ${res.status} ${await res.text()}`);
    this.workerId = (await res.json()).workerId;
    return this.workerId;
  }

  async lease(): Promise<Record<string, unknown> & { id: string; leaseId: string } | null> {
    const res = await this.call("/lease", { workerId: this.workerId });
    if (res.status === 204) return null;
    if (res.status !== 200) throw new Error(`lease: ${res.status} ${await res.text()}`);
    return await res.json();
  }

  async putBlob(bytes: Uint8Array): Promise<{ sha256: string; size: number }> {
    const res = await this.t.app.request("http://edge.test/internal/workers/blobs", {
      method: "PUT",
      headers: { authorization: `Bearer ${this.token}`, "content-type": "application/octet-stream" },
      body: bytes as Uint8Array<ArrayBuffer>,
    });
    if (res.status !== 200) throw new Error(`put blob: ${res.status} ${await res.text()}`);
    return await res.json();
  }

  heartbeat(job: { id: string; leaseId: string }, extra: Record<string, unknown> = {}) {
    return this.call(`/jobs/${job.id}/heartbeat`, {
      workerId: this.workerId,
      leaseId: job.leaseId,
      ...extra,
    });
  }

  async complete(
    job: { id: string; leaseId: string; kind?: unknown; method?: unknown },
    outputs: { bytes: Uint8Array; contentType: string; name: string }[],
    adapter: Partial<AdapterDescriptor> = {},
  ) {
    const refs = [];
    for (const o of outputs) {
      refs.push({ blob: await this.putBlob(o.bytes), contentType: o.contentType, name: o.name });
    }
    return this.call(`/jobs/${job.id}/complete`, {
      workerId: this.workerId,
      leaseId: job.leaseId,
      outputs: refs,
      metrics: { steps: 1 },
      ...(job.kind === "training" || job.kind === "merge"
        ? { adapter: { ...defaultDescriptor(job.kind, String(job.method)), ...adapter } }
        : {}),
    });
  }

  fail(job: { id: string; leaseId: string }, error: string, retryable: boolean) {
    return this.call(`/jobs/${job.id}/fail`, {
      workerId: this.workerId,
      leaseId: job.leaseId,
      error,
      retryable,
    });
  }
}

/** What a worker of the registry's method would report, short of tokens and class word. */
function defaultDescriptor(kind: "training" | "merge", method: string): AdapterDescriptor {
  return kind === "training"
    ? {
      kind: TRAINING_METHOD_REGISTRY[method as TrainingMethod].adapterKind,
      method,
      tokens: [],
      class_word: null,
      full_model: false,
    }
    : {
      kind: MERGE_METHOD_REGISTRY[method as MergeMethod].adapterKind,
      method: `merge:${method}`,
      tokens: [],
      class_word: null,
      full_model: false,
    };
}

/** A small RGB PNG with a gradient (so re-encoding has something to keep). */
export function testPng(width = 8, height = 8, seed = 0): Uint8Array {
  const data = new Uint8Array(width * height * 3);
  for (let i = 0; i < width * height; i++) {
    data.set([(i * 7 + seed) & 255, (i * 3) & 255, (255 - i + seed) & 255], i * 3);
  }
  return encode({ width, height, data, channels: 3, depth: 8 });
}

export function uploadForm(
  bytes: Uint8Array,
  filename: string,
  extra: Record<string, string> = {},
): FormData {
  const form = new FormData();
  form.set("content", new File([bytes as Uint8Array<ArrayBuffer>], filename));
  for (const [k, v] of Object.entries(extra)) form.set(k, v);
  return form;
}
