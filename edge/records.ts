/**
 * Stored records of files and adapters, tenant-scoped lookups (another tenant's object is simply not found:
 * 404, never 403), and the presenters that turn records and broker jobs into API.md's public objects.
 *
 * @example
 * ```ts
 * const file = await ownedFile(edge, tenant.id, "file_abc"); // or a 404 problem
 * c.json(presentFile(file, originOf(c)));
 * ```
 */
import type { Adapter } from "../shared/adapters.ts";
import type { FileKind, FileObject, ZipEntry } from "../shared/files.ts";
import type { JobRecord } from "../shared/job_broker.ts";
import type { JobStatus } from "../shared/jobs.ts";
import type { Edge } from "./context.ts";
import { notFound } from "./problem.ts";

export interface FileRecord {
  id: string;
  tenant: string;
  kind: FileKind;
  content_type: string;
  size: number;
  sha256: string;
  filename: string | null;
  metadata: Record<string, unknown>;
  width?: number;
  height?: number;
  entries?: (ZipEntry & { size: number })[];
  tensors?: number;
  /** The job whose output this is, if any. */
  job?: string;
  created_at: string;
}

export interface AdapterRecord {
  id: string;
  tenant: string;
  name: string;
  kind: "concept" | "slider" | "library";
  method: string;
  base_model: string;
  token: string | null;
  /** Every token the adapter brings (a jointly trained or merged Custom Diffusion adapter has several). */
  tokens?: string[];
  class_word: string | null;
  /** A full fine-tune (DreamBooth `mode: "full"`): a whole model, used at scale 1, one per prediction. */
  full_model?: boolean;
  source: { kind: "training" | "merge" | "import"; id: string | null };
  sha256: string;
  size: number;
  metrics: Record<string, number>;
  created_at: string;
}

export async function ownedFile(edge: Edge, tenant: string, id: string): Promise<FileRecord> {
  const f = await edge.metadata.get<FileRecord>(["files", tenant, id]);
  if (!f) throw notFound("file", id);
  return f;
}

export async function ownedAdapter(edge: Edge, tenant: string, id: string): Promise<AdapterRecord> {
  const a = await edge.metadata.get<AdapterRecord>(["adapters", tenant, id]);
  if (!a) throw notFound("adapter", id);
  return a;
}

const PLURAL = { prediction: "predictions", training: "trainings", merge: "merges" } as const;

export async function ownedJob(
  edge: Edge,
  tenant: string,
  kind: JobRecord["kind"],
  id: string,
): Promise<JobRecord> {
  const job = await edge.broker.get(id);
  if (!job || job.tenant !== tenant || job.kind !== kind) throw notFound(kind, id);
  return job;
}

export function presentFile(f: FileRecord, origin: string): FileObject {
  return {
    id: f.id,
    kind: f.kind,
    content_type: f.content_type,
    size: f.size,
    filename: f.filename,
    metadata: f.metadata,
    checksums: { sha256: f.sha256 },
    ...(f.width !== undefined ? { width: f.width, height: f.height } : {}),
    ...(f.entries ? { entries: f.entries.map(({ size: _s, ...e }) => e) } : {}),
    ...(f.tensors !== undefined ? { tensors: f.tensors } : {}),
    created_at: f.created_at,
    urls: { get: `${origin}/v1/files/${f.id}`, content: `${origin}/v1/files/${f.id}/content` },
  };
}

export function triggersOf(a: Pick<AdapterRecord, "name" | "token" | "kind">): string[] {
  const name = `<${a.name}>`;
  return [name, ...(a.token && a.kind !== "slider" && a.token !== name ? [a.token] : [])];
}

export function presentAdapter(a: AdapterRecord, origin: string): Adapter {
  return {
    id: a.id,
    name: a.name,
    kind: a.kind,
    method: a.method,
    base_model: a.base_model,
    triggers: triggersOf(a),
    token: a.token,
    class_word: a.class_word,
    full_model: a.full_model ?? false,
    source: a.source,
    size: a.size,
    checksums: { sha256: a.sha256 },
    metrics: a.metrics,
    created_at: a.created_at,
    urls: { get: `${origin}/v1/adapters/${a.id}`, weights: `${origin}/v1/adapters/${a.id}/weights` },
  };
}

export function publicStatus(job: JobRecord): JobStatus {
  switch (job.state) {
    case "queued":
      return "starting";
    case "leased":
      return "processing";
    case "dead":
      return "failed";
    default:
      return job.state;
  }
}

const iso = (t: number | null) => (t === null ? null : new Date(t).toISOString());

/** The public object of a job (prediction, training or merge), as GET, webhooks and Prefer: wait show it. */
export function presentJob(
  job: JobRecord,
  origin: string,
  queuePosition?: number | null,
): Record<string, unknown> {
  const base = `${origin}/v1/${PLURAL[job.kind]}/${job.id}`;
  const r = job.request;
  const metrics: Record<string, number> = { ...job.metrics };
  if (job.startedAt !== null && job.completedAt !== null) {
    metrics.predict_time = (job.completedAt - job.startedAt) / 1000;
  }
  const result = job.state === "succeeded" ? job.result : null;
  let output: unknown = null;
  if (result && job.kind === "prediction") {
    output = (result.files as string[]).map((id) => `${origin}/v1/files/${id}/content`);
  } else if (result?.adapter) {
    output = { adapter: result.adapter, weights: `${origin}/v1/adapters/${result.adapter}/weights` };
  }
  return {
    id: job.id,
    status: publicStatus(job),
    ...(queuePosition !== undefined && queuePosition !== null ? { queue_position: queuePosition } : {}),
    ...(job.method ? { method: job.method } : {}),
    base_model: job.baseModel,
    ...(r.destination ? { destination: r.destination } : {}),
    input: r.input,
    ...(job.kind === "prediction" ? { adapters: r.adapters ?? [] } : {}),
    output,
    error: job.state === "queued" || job.state === "leased" ? null : job.error,
    logs: job.logs.join("\n"),
    metrics,
    cost: job.price,
    created_at: iso(job.createdAt),
    started_at: iso(job.startedAt),
    completed_at: iso(job.completedAt),
    urls: { get: base, cancel: `${base}/cancel`, stream: `${base}/stream` },
    ...(r.webhook ? { webhook: r.webhook } : {}),
    ...(r.webhook_events_filter ? { webhook_events_filter: r.webhook_events_filter } : {}),
  };
}
