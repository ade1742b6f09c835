/**
 * The GPU worker: registers with the edge (the base models under its models folder, its execution provider,
 * the job kinds it runs, and the training methods, merge methods and prediction features it serves: see
 * `jobs/served.ts`), then leases jobs one at a time over HTTP with the worker token and runs them on its
 * engine (ONNX Runtime in a Worker thread, so heartbeats keep firing while the UNet runs). A leased job's
 * input is parsed once, by its kind and method (`LeasedJob`), before its handler runs. Each job heartbeats
 * progress, previews, logs and checkpoints, and ends with `complete` (outputs uploaded as blobs) or `fail`
 * (`retryable: false` for bad input; a canceled job fails as canceled). Any number of workers may serve one
 * edge, each its own instance or process; a job whose worker dies is leased again after its lease expires and
 * resumes from its last checkpoint.
 *
 * @example
 * ```ts
 * const worker = await GpuWorker.start({ edgeUrl: "http://localhost:8787", token, modelsDir: "models" });
 * // ... later: hand back the running job (with its last checkpoint) and stop
 * await worker.stop();
 * ```
 */
import {
  type JobKind,
  LeasedJob,
  type LeaseEnvelope,
  type RegisterRequest,
} from "../shared/worker_protocol.ts";
import { type ExecutionProvider, parseExecutionProvider } from "./ort/session_spec.ts";
import { EdgeClient, EdgeError } from "./jobs/edge_client.ts";
import { servedModels, WorkerEngine } from "./jobs/engine.ts";
import { JobLease } from "./jobs/lease.ts";
import {
  errorMessage,
  isPermanentError,
  type JobContext,
  type JobResult,
  type JobSettings,
} from "./jobs/job.ts";
import { predict } from "./jobs/prediction.ts";
import { train } from "./jobs/training.ts";
import { merge } from "./jobs/merge.ts";
import { modelsServeReferenceImage, refuseUnserved, servedCapabilities } from "./jobs/served.ts";
import { NotServedError } from "./input_error.ts";

export interface GpuWorkerOptions {
  edgeUrl: string;
  /** The worker token (bearer) of `/internal/workers/*`. */
  token: string;
  /** Folder of base models (diffusers layout), one folder per model id. */
  modelsDir: string;
  ep?: ExecutionProvider;
  name?: string;
  kinds?: JobKind[];
  /** Scratch space (training runs, large graphs); default a fresh temp folder, removed on stop. */
  workDir?: string;
  /** Wait between leases when the queue is empty (default 1000 ms, with jitter). */
  idlePollMs?: number;
  /** Heartbeat period bound (default 5000 ms; never more than a third of the lease). */
  heartbeatMs?: number;
  previewEvery?: number;
  previewIntervalMs?: number;
  previewSize?: number;
  checkpointEvery?: number;
  log?: (line: string) => void;
  fetch?: typeof fetch;
}

/** What a worker has done, for tests and logs. */
export interface WorkerStats {
  leased: number;
  completed: number;
  failed: number;
}

/** One handler per job kind, each given its own kind of job (input typed by the registry). */
const HANDLERS: { [K in JobKind]: (ctx: JobContext<Extract<LeasedJob, { kind: K }>>) => Promise<JobResult> } =
  {
    prediction: predict,
    training: train,
    merge,
  };

/** Runs a job on its kind's handler. */
function handle(ctx: JobContext): Promise<JobResult> {
  return (HANDLERS[ctx.job.kind] as (ctx: JobContext) => Promise<JobResult>)(ctx);
}

/** Registers, retrying while the edge is unreachable; a refusal (4xx, e.g. a wrong token) is thrown. */
async function register(
  edge: EdgeClient,
  req: RegisterRequest,
  log: (line: string) => void,
): Promise<string> {
  for (let attempt = 0;; attempt++) {
    try {
      const { workerId } = await edge.register(req);
      log(
        `${req.name}: registered as ${workerId} (models ${req.models.join(", ")}; ${req.kinds.join(", ")}; ` +
          `trains ${req.methods.join(", ") || "nothing"}; merges ${req.merges.join(", ") || "nothing"}; ` +
          `features ${req.features.join(", ") || "none"}; ${req.executionProvider})`,
      );
      return workerId;
    } catch (e) {
      if ((e instanceof EdgeError && e.status >= 400 && e.status < 500) || attempt >= 30) throw e;
      log(`${req.name}: registration failed (${(e as Error).message}); retrying`);
      await new Promise((r) => setTimeout(r, Math.min(5000, 200 * 2 ** attempt)));
    }
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done);
  });
}

export class GpuWorker {
  readonly stats: WorkerStats = { leased: 0, completed: 0, failed: 0 };
  /** Resolves when the loop has ended (after `stop()`, or at once on `kill()`). */
  readonly done: Promise<void>;
  private readonly stopping = new AbortController();
  private current: JobLease | null = null;
  private killed = false;
  private resolveDone!: () => void;

  private constructor(
    public workerId: string,
    private readonly registration: RegisterRequest,
    private readonly edge: EdgeClient,
    private readonly engine: WorkerEngine,
    private readonly settings: JobSettings,
    private readonly opts: GpuWorkerOptions,
    private readonly ownWorkDir: boolean,
  ) {
    this.done = new Promise((r) => (this.resolveDone = r));
  }

  /** Registers with the edge (retrying while it is unreachable) and starts leasing. */
  static async start(opts: GpuWorkerOptions): Promise<GpuWorker> {
    const log = opts.log ?? ((line: string) => console.error(line));
    const models = await servedModels(opts.modelsDir);
    if (!models.length) throw new RangeError(`${opts.modelsDir} holds no model folders (model_index.json)`);
    const ep = opts.ep ?? "cpu";
    const registration: RegisterRequest = {
      name: opts.name ?? `gpu-worker-${crypto.randomUUID().slice(0, 8)}`,
      models,
      kinds: opts.kinds ?? ["prediction", "training", "merge"],
      executionProvider: ep,
      ...servedCapabilities({ referenceImage: await modelsServeReferenceImage(opts.modelsDir, models) }),
    };
    const edge = new EdgeClient(opts.edgeUrl, opts.token, opts.fetch);
    const workerId = await register(edge, registration, log);
    const workDir = opts.workDir ?? await Deno.makeTempDir({ prefix: "gpu-worker-" });
    await Deno.mkdir(workDir, { recursive: true });
    const engine = new WorkerEngine({ modelsDir: opts.modelsDir, ep, workDir });
    const settings: JobSettings = {
      previewEvery: opts.previewEvery ?? 5,
      previewIntervalMs: opts.previewIntervalMs ?? 2000,
      previewSize: opts.previewSize ?? 128,
      checkpointEvery: opts.checkpointEvery,
      workDir,
    };
    const w = new GpuWorker(workerId, registration, edge, engine, settings, { ...opts, log }, !opts.workDir);
    w.run().catch((e) => log(`${w.name}: worker loop ended with an error: ${(e as Error).stack}`));
    return w;
  }

  get name(): string {
    return this.registration.name;
  }

  private log(line: string) {
    this.opts.log!(line);
  }

  private async run(): Promise<void> {
    try {
      await this.leaseLoop();
    } finally {
      if (!this.killed) {
        await this.engine.close();
        if (this.ownWorkDir) await Deno.remove(this.settings.workDir, { recursive: true }).catch(() => {});
        this.resolveDone();
      }
    }
  }

  private async leaseLoop(): Promise<void> {
    let backoff = 0;
    while (!this.stopping.signal.aborted) {
      let job: LeaseEnvelope | null;
      try {
        job = await this.edge.lease(this.workerId);
        backoff = 0;
      } catch (e) {
        if (this.stopping.signal.aborted) break;
        if (e instanceof EdgeError && (e.status === 404 || e.status === 409)) {
          // The edge no longer knows this worker (restarted, or dropped it): register again.
          this.log(`${this.name}: ${e.message}; registering again`);
          this.workerId = await register(this.edge, this.registration, this.opts.log!);
          continue;
        }
        backoff = Math.min(10_000, Math.max(500, backoff * 2));
        this.log(`${this.name}: lease failed (${(e as Error).message}); retrying in ${backoff} ms`);
        await sleep(backoff, this.stopping.signal);
        continue;
      }
      if (!job) {
        const idle = this.opts.idlePollMs ?? 1000;
        await sleep(idle * (0.75 + Math.random() / 2), this.stopping.signal);
        continue;
      }
      this.stats.leased++;
      if (this.stopping.signal.aborted) {
        // Leased while stopping: hand it straight back.
        await this.deliver(job, "fail", () =>
          this.edge.fail(job.id, {
            workerId: this.workerId,
            leaseId: job.leaseId,
            error: `worker ${this.name} stopped; job handed back`,
            retryable: true,
          }));
        break;
      }
      await this.runJob(job);
    }
  }

  private async runJob(job: LeaseEnvelope): Promise<void> {
    const lease = new JobLease(this.edge, this.workerId, job, {
      intervalMs: this.opts.heartbeatMs,
      log: (l) => this.log(`${this.name}: ${l}`),
    });
    this.current = lease;
    lease.log(`${this.name}: ${job.kind} ${job.id} attempt ${job.attempt} on ${job.baseModel}`);
    lease.start();
    let result: JobResult | undefined;
    let error: unknown;
    try {
      if (!this.registration.kinds.includes(job.kind)) {
        throw new NotServedError(`job kind "${job.kind}" is not served by this worker`);
      }
      // What this worker does not serve is refused by name before the input's schema could object to it.
      refuseUnserved(job, this.registration);
      const typed = LeasedJob.parse(job);
      result = await handle({
        job: typed,
        lease,
        edge: this.edge,
        engine: this.engine,
        settings: this.settings,
      });
    } catch (e) {
      error = e;
    }
    this.current = null;
    if (lease.stoppedBy === "killed") return;
    await lease.end();
    if (lease.stoppedBy === "lost") {
      this.log(`${this.name}: ${job.id} dropped (lease lost)`);
      return;
    }
    const ids = { workerId: this.workerId, leaseId: job.leaseId };
    if (result && lease.stoppedBy !== "canceled") {
      await this.deliver(job, "complete", () => this.edge.complete(job.id, { ...ids, ...result }));
      this.stats.completed++;
      this.log(`${this.name}: ${job.id} completed`);
      return;
    }
    const [message, retryable] = lease.stoppedBy === "canceled"
      ? ["canceled", false]
      : lease.stoppedBy === "stopping"
      ? [`worker ${this.name} stopped; job handed back`, true]
      : [errorMessage(error), !isPermanentError(error)];
    this.stats.failed++;
    this.log(`${this.name}: ${job.id} failed (${retryable ? "retryable" : "permanent"}): ${message}`);
    await this.deliver(
      job,
      "fail",
      () => this.edge.fail(job.id, { ...ids, error: message.slice(0, 4000), retryable }),
    );
  }

  /** complete/fail with retries while the edge is unreachable; a refused one (lease gone) is only logged. */
  private async deliver(job: LeaseEnvelope, what: string, call: () => Promise<void>): Promise<void> {
    for (let attempt = 0; attempt < 6; attempt++) {
      try {
        return await call();
      } catch (e) {
        if (this.killed) return;
        if (e instanceof EdgeError && e.status >= 400 && e.status < 500) {
          this.log(`${this.name}: ${what} of ${job.id} refused: ${e.message}`);
          return;
        }
        await new Promise((r) => setTimeout(r, 250 * 2 ** attempt));
      }
    }
    this.log(
      `${this.name}: ${what} of ${job.id} not delivered; the lease will expire and the job be retried`,
    );
  }

  /** Stops leasing; a running job is stopped and handed back (retryable, with its last checkpoint). */
  async stop(): Promise<void> {
    this.stopping.abort();
    this.current?.stop("stopping");
    await this.done;
  }

  /**
   * Dies on the spot, as a crashed process would: no further word to the edge, the engine thread terminated.
   * The running job keeps its lease until it expires, then goes to another worker.
   */
  kill(): Promise<void> {
    this.killed = true;
    this.stopping.abort();
    this.current?.abandon();
    this.edge.close();
    this.engine.terminate();
    if (this.ownWorkDir) Deno.removeSync(this.settings.workDir, { recursive: true });
    this.resolveDone();
    return this.done;
  }
}

/**
 * The embedded edge's hook (`startEmbedded({ startWorker })`): one worker on `MODELS_DIR` with the CPU
 * execution provider unless `ONNX_EP` says otherwise.
 */
export function startWorker(
  edgeUrl: string,
  token: string,
  opts: Partial<GpuWorkerOptions> = {},
): Promise<GpuWorker> {
  return GpuWorker.start({
    edgeUrl,
    token,
    modelsDir: Deno.env.get("MODELS_DIR") ?? "./models",
    ep: parseExecutionProvider(Deno.env.get("ONNX_EP") ?? "cpu"),
    ...opts,
  });
}
