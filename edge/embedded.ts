/**
 * The embedded default (one machine, no setup): the edge on Deno KV (a SQLite file under DATA_DIR) for the
 * broker and metadata, content-addressed files under DATA_DIR/blobs, a reaper that returns jobs of dead
 * workers to the queue, a development API key, and optionally an in-process worker started through
 * `startWorker` once the edge listens (it gets the edge's URL and the worker token).
 *
 * @example
 * ```ts
 * const e = await startEmbedded({ port: 8787, dataDir: "./data", modelsDir: "./models",
 *   startWorker: (edgeUrl, workerToken) => startLocalWorker({ edgeUrl, workerToken, modelsDir: "./models" }) });
 * await e.stop();
 * ```
 */
import { KvJobBroker } from "./adapter/deno/kv_job_broker.ts";
import { KvMetadataStore } from "./adapter/deno/kv_metadata_store.ts";
import { FsBlobStore } from "./adapter/deno/fs_blob_store.ts";
import { createEdgeApp } from "./app.ts";
import { issueApiKey } from "./auth/api_keys.ts";
import type { Edge } from "./context.ts";
import { announce } from "./jobs.ts";
import { type IntegrationsConfig, integrationsFromEnv } from "./integrations/config.ts";

/** A running worker the embedded edge started and stops with itself. */
export interface RunningWorker {
  stop(): Promise<void>;
}

export interface EmbeddedOptions {
  /** 0 picks a free port. */
  port: number;
  dataDir: string;
  modelsDir: string;
  hostname?: string;
  /** Default: env WORKER_TOKEN, else a random one (only the in-process worker learns it). */
  workerToken?: string;
  /** Default: env WEBHOOKS_ALLOW_PRIVATE=1. */
  webhooksAllowPrivate?: boolean;
  leaseSeconds?: number;
  /**
   * The clock of the broker, the metadata store and the edge (default Date.now): a test moves it on to expire
   * a lease instead of waiting for one.
   */
  now?: () => number;
  /** Discord and Slack; default from env (`integrationsFromEnv`: DISCORD_PUBLIC_KEY, SLACK_SIGNING_SECRET, ...). */
  integrations?: Partial<IntegrationsConfig>;
  /** Requests per minute each API key may make. Default: env RATE_LIMIT_PER_MINUTE, else 600. */
  rateLimitPerMinute?: number;
  /** Starts a worker that talks to `edgeUrl` with `workerToken` (the worker protocol, over HTTP). */
  startWorker?: (edgeUrl: string, workerToken: string) => Promise<RunningWorker>;
  /** Where messages go (the dev key, the URL); default console.log. */
  log?: (message: string) => void;
}

export interface Embedded {
  /** http://127.0.0.1:<port> */
  url: string;
  port: number;
  workerToken: string;
  /** The development API key file (DATA_DIR/dev-api-key.txt). */
  devKeyFile: string;
  /** The development key, when this start made it (null on later starts: read devKeyFile). */
  devKey: string | null;
  edge: Edge;
  /** One pass of the reaper now (it also runs every 5 s): jobs of expired leases go back to the queue. */
  reap(): Promise<void>;
  stop(): Promise<void>;
}

const DEV_TENANT = "dev";
const DEV_CREDITS = 1_000_000;
const DEFAULT_RATE_LIMIT_PER_MINUTE = 600;

/** RATE_LIMIT_PER_MINUTE: a positive whole number of requests per key and minute (unset: the default). */
export function rateLimitPerMinuteFrom(raw: string | undefined): number {
  if (raw === undefined || raw.trim() === "") return DEFAULT_RATE_LIMIT_PER_MINUTE;
  const n = Number(raw.trim());
  if (!/^\d+$/.test(raw.trim()) || !Number.isSafeInteger(n) || n < 1) {
    throw new RangeError(`RATE_LIMIT_PER_MINUTE must be a positive whole number of requests, got "${raw}"`);
  }
  return n;
}

async function ensureDevKey(edge: Edge, file: string): Promise<string | null> {
  try {
    await Deno.stat(file);
    return null;
  } catch {
    const { key } = await issueApiKey(edge.metadata, edge.broker, {
      tenantName: DEV_TENANT,
      credits: DEV_CREDITS,
    });
    await Deno.writeTextFile(file, `${key}\n`, { mode: 0o600 });
    return key;
  }
}

export async function startEmbedded(o: EmbeddedOptions): Promise<Embedded> {
  const log = o.log ?? console.log;
  const perMinute = o.rateLimitPerMinute ?? rateLimitPerMinuteFrom(Deno.env.get("RATE_LIMIT_PER_MINUTE"));
  if (!Number.isSafeInteger(perMinute) || perMinute < 1) {
    throw new RangeError(`rateLimitPerMinute must be a positive whole number, got ${perMinute}`);
  }
  await Deno.mkdir(o.dataDir, { recursive: true });
  const kv = await Deno.openKv(`${o.dataDir}/kv.sqlite3`);
  const leaseSeconds = o.leaseSeconds ?? 60;
  const workerToken = o.workerToken ?? Deno.env.get("WORKER_TOKEN") ??
    `wkt_${crypto.randomUUID().replaceAll("-", "")}`;
  const { app, edge } = createEdgeApp({
    modelsDir: o.modelsDir,
    broker: new KvJobBroker(kv, { leaseMs: leaseSeconds * 1000, ...(o.now ? { now: o.now } : {}) }),
    metadata: new KvMetadataStore(kv, o.now),
    blobs: new FsBlobStore(`${o.dataDir}/blobs`),
    workerToken,
    leaseSeconds,
    ...(o.now ? { now: o.now } : {}),
    rateLimit: { limit: perMinute, windowMs: 60_000 },
    webhooksAllowPrivate: o.webhooksAllowPrivate ?? Deno.env.get("WEBHOOKS_ALLOW_PRIVATE") === "1",
    integrations: o.integrations ?? integrationsFromEnv((name) => Deno.env.get(name)),
  });
  const devKeyFile = `${o.dataDir}/dev-api-key.txt`;
  const devKey = await ensureDevKey(edge, devKeyFile);
  const server = Deno.serve({ port: o.port, hostname: o.hostname, onListen: () => {} }, app.fetch);
  const port = server.addr.port;
  const url = `http://127.0.0.1:${port}`;
  const reap = async () => (await edge.broker.reap()).forEach((j) => announce(edge, null, j));
  const reaper = setInterval(() => reap().catch((e) => console.error("reaper:", e)), 5_000);
  let worker: RunningWorker | null = null;
  try {
    if (o.startWorker) worker = await o.startWorker(url, workerToken);
  } catch (e) {
    clearInterval(reaper);
    await server.shutdown();
    kv.close();
    throw e;
  }
  log(`listening on http://localhost:${port} (models: ${o.modelsDir}, data: ${o.dataDir})`);
  log(
    devKey
      ? `development API key (shown once, also in ${devKeyFile}): ${devKey}`
      : `development API key: in ${devKeyFile}`,
  );
  let stopped = false;
  return {
    url,
    port,
    workerToken,
    devKeyFile,
    devKey,
    edge,
    reap,
    async stop() {
      if (stopped) return;
      stopped = true;
      clearInterval(reaper);
      await worker?.stop();
      edge.webhooks.close();
      await server.shutdown();
      kv.close();
    },
  };
}
