/**
 * A leased job while it runs: heartbeats on a timer (never blocked by the engine, which runs in its own thread)
 * that extend the lease and carry the latest progress, a preview when there is a new one, buffered log lines
 * and the latest checkpoint. Its `signal` aborts the job when the edge answers `cancel: true`, when the lease
 * is lost (409/404: another worker may hold the job now), or when the worker stops.
 *
 * @example
 * ```ts
 * const lease = new JobLease(edge, workerId, job);
 * lease.start();
 * await pipe.generate({ ...opts, signal: lease.signal, onStep: (s) => lease.progress({ step: s.step, total: s.total }) });
 * await lease.end();
 * ```
 */
import type { BlobRef, HeartbeatRequest, LeaseEnvelope } from "../../shared/worker_protocol.ts";
import { type EdgeClient, EdgeError } from "./edge_client.ts";

export interface JobProgress {
  step: number;
  total: number;
  loss?: number;
  eta_s?: number;
}

/** Why a job stopped before its end: the user canceled, the lease went to another worker, the worker stops. */
export type LeaseEnd = "canceled" | "lost" | "stopping" | "killed";

export interface JobLeaseOptions {
  /** Upper bound of the heartbeat period; a third of the lease when that is shorter. Default 5000 ms. */
  intervalMs?: number;
  log?: (line: string) => void;
}

/** Protocol limits (HeartbeatRequest): lines per heartbeat and characters per line. */
const MAX_LOG_LINES = 100;
const MAX_LOG_CHARS = 2000;

export class JobLease {
  private readonly controller = new AbortController();
  private timer: ReturnType<typeof setTimeout> | undefined;
  private inFlight: Promise<void> | null = null;
  private latest: JobProgress | undefined;
  private pendingPreview: string | undefined;
  private pendingCheckpoint: BlobRef | undefined;
  private logs: string[] = [];
  private intervalMs: number;
  private ended = false;
  /** Set when the job was stopped from outside (see LeaseEnd); null while it may run to its end. */
  stoppedBy: LeaseEnd | null = null;
  heartbeats = 0;

  constructor(
    private readonly edge: EdgeClient,
    private readonly workerId: string,
    readonly job: LeaseEnvelope,
    private readonly opts: JobLeaseOptions = {},
  ) {
    this.intervalMs = this.periodFor(job.leaseSeconds);
  }

  /** Aborted when the job must stop; `stoppedBy` says why. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  private periodFor(leaseSeconds: number): number {
    return Math.max(50, Math.min(this.opts.intervalMs ?? 5000, (leaseSeconds * 1000) / 3));
  }

  start(): void {
    this.schedule();
  }

  private schedule(): void {
    if (this.ended) return;
    this.timer = setTimeout(async () => {
      await this.beat();
      this.schedule();
    }, this.intervalMs);
  }

  progress(p: JobProgress): void {
    this.latest = p;
  }

  /** A small PNG, base64; only the newest one goes out with the next heartbeat. */
  preview(pngBase64: string): void {
    this.pendingPreview = pngBase64;
  }

  log(line: string): void {
    this.logs.push(line.length > MAX_LOG_CHARS ? line.slice(0, MAX_LOG_CHARS - 1) + "…" : line);
    if (this.logs.length > 10 * MAX_LOG_LINES) this.logs.splice(0, this.logs.length - 10 * MAX_LOG_LINES);
  }

  /** Sends the checkpoint (already uploaded) with a heartbeat now. */
  async checkpoint(ref: BlobRef): Promise<void> {
    this.pendingCheckpoint = ref;
    await this.beat();
  }

  /** Stops the job from outside: its signal aborts with a DOMException AbortError naming `why`. */
  stop(why: LeaseEnd): void {
    this.stoppedBy ??= why;
    this.controller.abort(new DOMException(`job ${this.job.id} ${why}`, "AbortError"));
  }

  /** One heartbeat, after the one in flight (so a checkpoint never overtakes older progress). */
  async beat(): Promise<void> {
    while (this.inFlight) await this.inFlight;
    if (this.stoppedBy === "lost" || this.stoppedBy === "killed") return;
    this.inFlight = this.send().finally(() => (this.inFlight = null));
    await this.inFlight;
  }

  private async send(): Promise<void> {
    const logs = this.logs.splice(0, MAX_LOG_LINES);
    const preview = this.pendingPreview, checkpoint = this.pendingCheckpoint;
    this.pendingPreview = this.pendingCheckpoint = undefined;
    const req: HeartbeatRequest = { workerId: this.workerId, leaseId: this.job.leaseId };
    if (this.latest) req.progress = this.latest;
    if (preview) req.preview = preview;
    if (logs.length) req.logs = logs;
    if (checkpoint) req.checkpoint = checkpoint;
    try {
      const res = await this.edge.heartbeat(this.job.id, req);
      this.heartbeats++;
      this.intervalMs = this.periodFor(res.leaseSeconds);
      if (res.cancel) this.stop("canceled");
    } catch (e) {
      if (e instanceof EdgeError && [404, 409, 410].includes(e.status)) {
        this.opts.log?.(`job ${this.job.id}: lease lost (${e.message})`);
        this.stop("lost");
        return;
      }
      // The edge is unreachable or failing: keep what was not delivered for the next heartbeat.
      this.opts.log?.(`job ${this.job.id}: heartbeat failed (${(e as Error).message}); retrying`);
      this.logs.unshift(...logs);
      this.pendingPreview ??= preview;
      this.pendingCheckpoint ??= checkpoint;
    }
  }

  /** Stops the timer and, unless the lease is gone, delivers what is still buffered. */
  async end(): Promise<void> {
    this.ended = true;
    clearTimeout(this.timer);
    while (this.inFlight) await this.inFlight;
    if (
      this.stoppedBy !== "lost" && this.stoppedBy !== "killed" && (this.logs.length || this.pendingPreview)
    ) {
      await this.beat();
    }
  }

  /** Stops the timer without another word to the edge (the worker is being killed). */
  abandon(): void {
    this.ended = true;
    clearTimeout(this.timer);
    this.stop("killed");
  }
}
