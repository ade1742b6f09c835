/**
 * The edge's services, built once from its configuration and handed to every route module: the three
 * ports (broker, metadata, blobs), the event hub, webhook delivery, rate limits and limits. With nothing
 * configured it runs on the in-memory adapters (tests); `embedded.ts` passes Deno KV and files.
 *
 * @example
 * ```ts
 * const edge = createEdge({ modelsDir: "./models" });
 * ```
 */
import type { Context } from "hono";
import type { BlobStore } from "../shared/blob_store.ts";
import type { JobBroker } from "../shared/job_broker.ts";
import type { MetadataStore } from "../shared/metadata_store.ts";
import type { MergeMethod, PredictionFeature, TrainingMethod } from "../shared/methods.ts";
import type { JobKind } from "../shared/worker_protocol.ts";
import { MemoryBlobStore } from "./adapter/memory/blob_store.ts";
import { MemoryJobBroker } from "./adapter/memory/job_broker.ts";
import { MemoryMetadataStore } from "./adapter/memory/metadata_store.ts";
import type { Tenant } from "./auth/api_keys.ts";
import { JobEvents } from "./events.ts";
import { type IntegrationsConfig, resolveIntegrations } from "./integrations/config.ts";
import { RateLimiter, type RateLimitPolicy } from "./rate_limit.ts";
import { DEFAULT_UPLOAD_LIMITS, type UploadLimits } from "./uploads/ingest.ts";
import { WebhookDispatcher, type WebhookDispatcherOptions } from "./webhooks/dispatcher.ts";
import { generateWebhookSecret } from "./webhooks/signature.ts";

export interface EdgeConfig {
  modelsDir: string;
  broker?: JobBroker;
  metadata?: MetadataStore;
  blobs?: BlobStore;
  /** Bearer token of `/internal/workers/*`; random when absent (then only in-process workers know it). */
  workerToken?: string;
  /** Lease length told to workers (must match the broker's `leaseMs`). */
  leaseSeconds?: number;
  uploadLimits?: Partial<UploadLimits>;
  /** Bytes of a JSON request body. */
  maxJsonBytes?: number;
  /** Bytes of one blob a worker uploads. */
  maxWorkerBlobBytes?: number;
  rateLimit?: RateLimitPolicy;
  /** Webhooks to private addresses (local development only; env WEBHOOKS_ALLOW_PRIVATE=1). */
  webhooksAllowPrivate?: boolean;
  webhookOptions?: Partial<WebhookDispatcherOptions>;
  /** SSE keep-alive comment interval (15 s). */
  keepAliveMs?: number;
  /** Discord and Slack (`integrations/config.ts`); off unless their secrets are given. */
  integrations?: Partial<IntegrationsConfig>;
  now?: () => number;
}

export interface Edge {
  broker: JobBroker;
  metadata: MetadataStore;
  blobs: BlobStore;
  events: JobEvents;
  webhooks: WebhookDispatcher;
  limiter: RateLimiter;
  webhooksAllowPrivate: boolean;
  modelsDir: string;
  workerToken: string;
  leaseSeconds: number;
  uploadLimits: UploadLimits;
  maxJsonBytes: number;
  maxWorkerBlobBytes: number;
  keepAliveMs: number;
  integrations: IntegrationsConfig;
  now: () => number;
}

export interface WorkerRecord {
  id: string;
  name: string;
  models: string[];
  kinds: JobKind[];
  executionProvider: string;
  /** What it serves (`RegisterRequest`); absent in records of workers that registered before they said. */
  methods?: TrainingMethod[];
  merges?: MergeMethod[];
  features?: PredictionFeature[];
  registered_at: string;
  last_seen: string;
}

export interface EdgeEnv {
  Variables: {
    edge: Edge;
    tenant: Tenant;
    /** The rate limiter's key: the API key's hash. */
    keyHash: string;
    rawBody?: Uint8Array<ArrayBuffer>;
    /** The Idempotency-Key and the request's fingerprint, when the client sent a key. */
    idempotencyKey?: string;
  };
}
export type EdgeContext = Context<EdgeEnv>;

export function createEdge(config: EdgeConfig): Edge {
  const now = config.now ?? Date.now;
  const metadata = config.metadata ?? new MemoryMetadataStore(now);
  return {
    broker: config.broker ?? new MemoryJobBroker({ now, leaseMs: (config.leaseSeconds ?? 60) * 1000 }),
    metadata,
    blobs: config.blobs ?? new MemoryBlobStore(),
    events: new JobEvents(),
    webhooks: new WebhookDispatcher({
      secretFor: (tenant) => webhookSecret(metadata, tenant),
      allowPrivate: config.webhooksAllowPrivate ?? false,
      now,
      ...config.webhookOptions,
    }),
    limiter: new RateLimiter(config.rateLimit ?? { limit: 600, windowMs: 60_000 }, now),
    webhooksAllowPrivate: config.webhooksAllowPrivate ?? false,
    modelsDir: config.modelsDir,
    workerToken: config.workerToken ?? `wkt_${crypto.randomUUID().replaceAll("-", "")}`,
    leaseSeconds: config.leaseSeconds ?? 60,
    uploadLimits: { ...DEFAULT_UPLOAD_LIMITS, ...config.uploadLimits },
    maxJsonBytes: config.maxJsonBytes ?? 1 << 20,
    maxWorkerBlobBytes: config.maxWorkerBlobBytes ?? 2 ** 30,
    keepAliveMs: config.keepAliveMs ?? 15_000,
    integrations: resolveIntegrations(config.integrations),
    now,
  };
}

/** The tenant's `whsec_` signing secret, made on first use. */
export async function webhookSecret(metadata: MetadataStore, tenant: string): Promise<string> {
  const found = await metadata.get<string>(["webhook_secrets", tenant]);
  if (found) return found;
  await metadata.create(["webhook_secrets", tenant], generateWebhookSecret());
  return (await metadata.get<string>(["webhook_secrets", tenant]))!;
}

/** The public origin for URLs in responses: the request's own, or X-Forwarded-* behind a proxy. */
export function originOf(c: Context): string {
  const url = new URL(c.req.url);
  const proto = c.req.header("x-forwarded-proto") ?? url.protocol.replace(":", "");
  const host = c.req.header("x-forwarded-host") ?? url.host;
  return `${proto}://${host}`;
}

export function newId(prefix: string): string {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return `${prefix}_${Array.from(bytes, (b) => "abcdefghijklmnopqrstuvwxyz234567"[b & 31]).join("")}`;
}

/** A job id derived from the tenant's Idempotency-Key: a retried request names the same job. */
export async function idempotentId(
  prefix: string,
  tenant: string,
  route: string,
  key: string,
): Promise<string> {
  const d = new Uint8Array(
    await crypto.subtle.digest("SHA-256", new TextEncoder().encode(`${tenant}\0${route}\0${key}`)),
  );
  return `${prefix}_${
    Array.from(d.subarray(0, 12), (b) => "abcdefghijklmnopqrstuvwxyz234567"[b & 31]).join("")
  }`;
}

/** A path parameter of the matched route. */
export function param(c: Context, name: string): string {
  return c.req.param(name) ?? "";
}
