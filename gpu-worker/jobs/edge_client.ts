/**
 * The worker's side of the worker protocol (`shared/worker_protocol.ts`): typed calls to the edge's
 * `/internal/workers/*` routes with the worker token, answers checked with the shared zod schemas, blobs
 * content-addressed and verified by sha256 on download. Every call can be cut off at once (`close()`), which is
 * how a worker that is being killed stops talking to the edge mid-request.
 *
 * @example
 * ```ts
 * const edge = new EdgeClient("http://localhost:8787", "wkr_...");
 * const { workerId } = await edge.register({ name: "w1", models: ["tiny-shapes"], kinds: ["prediction"],
 *   executionProvider: "cpu" });
 * const job = await edge.lease(workerId); // null when the queue is empty
 * ```
 */
import {
  BlobRef,
  type CompleteRequest,
  type FailRequest,
  type HeartbeatRequest,
  HeartbeatResponse,
  LeaseEnvelope,
  type RegisterRequest,
  RegisterResponse,
} from "../../shared/worker_protocol.ts";
import { sha256Hex } from "../../shared/blob_store.ts";

/** An answer of the edge that is not the expected one; `status` 0 means it could not be reached. */
export class EdgeError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
    this.name = "EdgeError";
  }
}

export class EdgeClient {
  private readonly base: string;
  private readonly closer = new AbortController();

  constructor(
    edgeUrl: string,
    private readonly token: string,
    private readonly fetchFn: typeof fetch = fetch,
  ) {
    this.base = edgeUrl.replace(/\/+$/, "") + "/internal/workers";
  }

  /** Aborts every call in flight and refuses later ones (a killed worker says nothing more). */
  close(): void {
    this.closer.abort();
  }

  private async call(method: string, path: string, body?: BodyInit, contentType?: string): Promise<Response> {
    if (this.closer.signal.aborted) throw new EdgeError(0, `${method} ${path}: client closed`);
    const headers: Record<string, string> = { authorization: `Bearer ${this.token}` };
    if (contentType) headers["content-type"] = contentType;
    let res: Response;
    try {
      res = await this.fetchFn(this.base + path, { method, headers, body, signal: this.closer.signal });
    } catch (e) {
      throw new EdgeError(0, `${method} ${path}: edge unreachable (${(e as Error).message})`);
    }
    if (!res.ok) {
      const text = await res.text().catch(() => "");
      throw new EdgeError(res.status, `${method} ${path}: ${res.status} ${text.slice(0, 500)}`);
    }
    return res;
  }

  private json(method: string, path: string, body: unknown) {
    return this.call(method, path, JSON.stringify(body), "application/json");
  }

  async register(req: RegisterRequest): Promise<RegisterResponse> {
    return RegisterResponse.parse(await (await this.json("POST", "/register", req)).json());
  }

  /**
   * The next job for this worker, or null when there is none (204). Its input is read later (`LeasedJob`),
   * so that a job whose input is refused can still be failed by its lease.
   */
  async lease(workerId: string): Promise<LeaseEnvelope | null> {
    const res = await this.json("POST", "/lease", { workerId });
    if (res.status === 204) {
      await res.body?.cancel();
      return null;
    }
    return LeaseEnvelope.parse(await res.json());
  }

  async heartbeat(jobId: string, req: HeartbeatRequest): Promise<HeartbeatResponse> {
    const res = await this.json("POST", `/jobs/${encodeURIComponent(jobId)}/heartbeat`, req);
    return HeartbeatResponse.parse(await res.json());
  }

  async complete(jobId: string, req: CompleteRequest): Promise<void> {
    await (await this.json("POST", `/jobs/${encodeURIComponent(jobId)}/complete`, req)).body?.cancel();
  }

  async fail(jobId: string, req: FailRequest): Promise<void> {
    await (await this.json("POST", `/jobs/${encodeURIComponent(jobId)}/fail`, req)).body?.cancel();
  }

  /** Uploads bytes; the edge answers with their content address. */
  async putBlob(bytes: Uint8Array, contentType: string): Promise<BlobRef> {
    const res = await this.call("PUT", "/blobs", bytes as Uint8Array<ArrayBuffer>, contentType);
    const ref = BlobRef.parse(await res.json());
    const own = await sha256Hex(bytes);
    if (ref.sha256 !== own || ref.size !== bytes.length) {
      throw new EdgeError(res.status, `PUT /blobs: edge stored ${ref.sha256} (${ref.size} B), sent ${own}`);
    }
    return ref;
  }

  /** Downloads a blob and checks its sha256 and size against the reference. */
  async getBlob(ref: BlobRef): Promise<Uint8Array> {
    const res = await this.call("GET", `/blobs/${ref.sha256}`);
    const bytes = new Uint8Array(await res.arrayBuffer());
    const got = await sha256Hex(bytes);
    if (got !== ref.sha256 || bytes.length !== ref.size) {
      throw new EdgeError(
        res.status,
        `GET /blobs/${ref.sha256}: got ${bytes.length} B with sha256 ${got}, expected ${ref.size} B`,
      );
    }
    return bytes;
  }
}
