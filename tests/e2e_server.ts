/**
 * The end-to-end fixture: the embedded edge (Deno KV and files under a temp folder) on a free port, with
 * GPU workers speaking the worker protocol to it over real HTTP, two tenants with API keys, and helpers for
 * the public API (JSON, uploads, Server-Sent Events) as a client sees it.
 *
 * @example
 * ```ts
 * const e = await startE2E();
 * const res = await e.json("/v1/predictions", { base_model: "tiny-shapes", input: { prompt: "a red star" } });
 * await e.stop();
 * ```
 */
import { encodePng } from "../gpu-worker/image/png.ts";
import { renderScene } from "../gpu-worker/shapesworld/render.ts";
import {
  type ColourName,
  sampleScene,
  type ShapeName,
  type TextureName,
} from "../gpu-worker/shapesworld/world.ts";
import { Rng } from "../gpu-worker/random.ts";
import { GpuWorker, type GpuWorkerOptions } from "../gpu-worker/worker.ts";
import { type Embedded, startEmbedded } from "../edge/embedded.ts";
import { issueApiKey } from "../edge/auth/api_keys.ts";
import type { IntegrationsConfig } from "../edge/integrations/config.ts";

export const ROOT = new URL("..", import.meta.url).pathname;
export const MODELS = `${ROOT}models`;

export interface SseEvent {
  event: string;
  data: unknown;
}

export interface E2E {
  url: string;
  embedded: Embedded;
  workerToken: string;
  keyA: string;
  keyB: string;
  /** A request with tenant A's key unless another key (or null: none) is given. */
  api(path: string, init?: RequestInit, key?: string | null): Promise<Response>;
  json(path: string, body: unknown, key?: string | null, headers?: Record<string, string>): Promise<Response>;
  /** POST /v1/files; returns the response. */
  upload(bytes: Uint8Array, filename: string, key?: string): Promise<Response>;
  /** A new tenant with `credits`; returns its key. */
  tenant(name: string, credits: number): Promise<string>;
  /** An in-process worker against this edge (quick polls and heartbeats for tests). */
  startWorker(o?: Partial<GpuWorkerOptions>): Promise<GpuWorker>;
  /** The events of a job's stream until `done` (or `ms` elapse). */
  stream(url: string, key?: string, ms?: number): Promise<SseEvent[]>;
  /**
   * POST /v1/trainings with `body`, follow its stream to `done`, and return the finished training; throws
   * unless it was accepted (201) and succeeded.
   */
  trainToDone(body: Record<string, unknown>): Promise<Record<string, unknown>>;
  /** Polls GET `path` until `accept` holds; returns that body. */
  poll(
    path: string,
    accept: (body: Record<string, unknown>) => boolean,
    ms?: number,
    key?: string,
  ): Promise<Record<string, unknown>>;
  stop(): Promise<void>;
}

export interface E2EOptions {
  /** Start one in-process worker with the edge (default true). */
  worker?: boolean;
  leaseSeconds?: number;
  /** The edge's clock (`startEmbedded`'s `now`); default Date.now. */
  now?: () => number;
  /** Discord and Slack (`edge/integrations/config.ts`); default none. */
  integrations?: Partial<IntegrationsConfig>;
}

export async function startE2E(o: E2EOptions = {}): Promise<E2E> {
  const dataDir = await Deno.makeTempDir({ prefix: "e2e_" });
  const workers: GpuWorker[] = [];
  const workerOptions = (edgeUrl: string, token: string): GpuWorkerOptions => ({
    edgeUrl,
    token,
    modelsDir: MODELS,
    idlePollMs: 100,
    heartbeatMs: 300,
    previewEvery: 2,
    previewIntervalMs: 0,
    log: () => {},
  });
  const embedded = await startEmbedded({
    port: 0,
    hostname: "127.0.0.1",
    dataDir,
    modelsDir: MODELS,
    leaseSeconds: o.leaseSeconds,
    now: o.now,
    webhooksAllowPrivate: true,
    integrations: o.integrations ?? {},
    log: () => {},
    startWorker: o.worker === false ? undefined : async (edgeUrl, token) => {
      const w = await GpuWorker.start({ ...workerOptions(edgeUrl, token), name: "embedded" });
      workers.push(w);
      return w;
    },
  });
  const { edge, url } = embedded;
  const a = await issueApiKey(edge.metadata, edge.broker, { tenantName: "alice", credits: 100_000 });
  const b = await issueApiKey(edge.metadata, edge.broker, { tenantName: "bob", credits: 100_000 });
  const api = (path: string, init: RequestInit = {}, key: string | null = a.key) => {
    const headers = new Headers(init.headers);
    if (key) headers.set("authorization", `Bearer ${key}`);
    return fetch(`${url}${path}`, { ...init, headers });
  };
  const e: E2E = {
    url,
    embedded,
    workerToken: embedded.workerToken,
    keyA: a.key,
    keyB: b.key,
    api,
    json: (path, body, key = a.key, headers = {}) =>
      api(path, {
        method: "POST",
        body: JSON.stringify(body),
        headers: { "content-type": "application/json", ...headers },
      }, key),
    upload: (bytes, filename, key = a.key) => {
      const form = new FormData();
      form.set("content", new File([bytes as Uint8Array<ArrayBuffer>], filename));
      return api("/v1/files", { method: "POST", body: form }, key);
    },
    tenant: async (name, credits) =>
      (await issueApiKey(edge.metadata, edge.broker, { tenantName: name, credits })).key,
    startWorker: async (opts = {}) => {
      const w = await GpuWorker.start({ ...workerOptions(url, embedded.workerToken), ...opts });
      workers.push(w);
      return w;
    },
    stream: (streamUrl, key = a.key, ms = 60_000) => readStream(streamUrl, key, ms),
    trainToDone: async (body) => {
      const res = await e.json("/v1/trainings", body);
      if (res.status !== 201) throw new Error(`POST /v1/trainings: ${res.status} ${await res.text()}`);
      const job = await res.json();
      const events = await readStream(job.urls.stream, a.key, 60_000);
      if (events.at(-1)?.event !== "done") {
        throw new Error(
          `training ${job.id}: stream ended with ${JSON.stringify(events.map((x) => x.event))}`,
        );
      }
      const done = await (await api(`/v1/trainings/${job.id}`)).json();
      if (done.status !== "succeeded") throw new Error(`training ${job.id} ${done.status}: ${done.error}`);
      return done;
    },
    poll: async (path, accept, ms = 60_000, key = a.key) => {
      const end = Date.now() + ms;
      let last: Record<string, unknown> = {};
      while (Date.now() < end) {
        const res = await api(path, {}, key);
        last = await res.json();
        if (res.ok && accept(last)) return last;
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(`${path} not as expected after ${ms} ms: ${JSON.stringify(last).slice(0, 2000)}`);
    },
    stop: async () => {
      for (const w of workers) await w.stop();
      await embedded.stop();
      await Deno.remove(dataDir, { recursive: true }).catch(() => {});
    },
  };
  return e;
}

async function readStream(url: string, key: string, ms: number): Promise<SseEvent[]> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), ms);
  const events: SseEvent[] = [];
  try {
    const res = await fetch(url, { headers: { authorization: `Bearer ${key}` }, signal: ac.signal });
    if (!res.ok || !res.headers.get("content-type")?.startsWith("text/event-stream")) {
      throw new Error(`stream ${url}: ${res.status} ${res.headers.get("content-type")} ${await res.text()}`);
    }
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return events;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let event = "message", data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data += line.slice(5).trim();
        }
        if (!data) continue; // a keep-alive comment
        events.push({ event, data: JSON.parse(data) });
        if (event === "done") {
          await reader.cancel();
          return events;
        }
      }
    }
  } catch (e) {
    if (ac.signal.aborted) {
      throw new Error(`stream ${url}: no done within ${ms} ms; got ${JSON.stringify(events)}`);
    }
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

/** A ShapesWorld picture of one object on white, as PNG. */
export function objectPng(
  seed: number,
  shape: ShapeName,
  colour: ColourName,
  texture: TextureName,
): Uint8Array {
  return encodePng(renderScene(sampleScene(new Rng(seed), {
    objectCount: 1,
    shapes: [shape],
    colours: [colour],
    textures: [texture],
    backgrounds: ["white"],
  })));
}

/** A purple checkered star (the subject the tests teach). */
export function starPng(seed: number): Uint8Array {
  return objectPng(seed, "star", "purple", "checkered");
}
