/**
 * `deno task bench:edge`: the edge's sustained request rate and latency, measured over real HTTP from a
 * separate process. It issues API keys of one tenant ("bench") into a fresh DATA_DIR, starts `edge/main.ts`
 * there as a child process (EMBEDDED_WORKER=0: jobs only queue, nothing runs them; a free port), then drives
 * it from this process with N concurrent keep-alive connections for T seconds:
 *
 * 1. `GET /healthz` (no auth, no store): the baseline of the HTTP stack and Hono;
 * 2. `POST /v1/predictions` (steps 1 = 1 credit, a distinct Idempotency-Key each, no `Prefer: wait`): auth,
 *    rate limit, idempotency record, validation, the price reserved and the job queued in Deno KV.
 *
 * The load is spread round-robin over several keys of the tenant so that the per-key rate limit (600 a
 * minute) does not cap it; every request still goes through auth and the limiter. Prints requests/s, p50 and
 * p99 latency (ms) and errors for each phase, then checks: every submission answered 202 `starting` with its
 * own job id, an Idempotency-Key replay returns the same job, the account reserved exactly one credit per job,
 * and (after the server stopped) the store holds exactly the accepted jobs. Exits 1 when a check fails.
 * The client and the server share the machine's cores: the figures are of the pair, not of the edge alone.
 *
 * Usage: deno task bench:edge [--connections 8] [--duration 10] [--warmup 1] [--keys N] [--tenants 1]
 *          [--models DIR] [--model ID] [--keep]
 */
import { parseArgs } from "node:util";
import { KvJobBroker } from "../edge/adapter/deno/kv_job_broker.ts";
import { KvMetadataStore } from "../edge/adapter/deno/kv_metadata_store.ts";
import { issueApiKey } from "../edge/auth/api_keys.ts";

export interface EdgeBenchOptions {
  /** Concurrent connections (in-flight requests) of the load generator. */
  connections?: number;
  /** Seconds of measured load per phase. */
  durationS?: number;
  /** Seconds of unmeasured load before each phase. */
  warmupS?: number;
  /** API keys to spread the load over (default: enough for 4,000 requests/s under the 600/min limit). */
  keys?: number;
  /**
   * Tenants the keys belong to (default 1: one busy tenant, whose account every submission updates). More
   * tenants spread the account updates.
   */
  tenants?: number;
  /** Keep the temporary DATA_DIR (its path is printed). */
  keep?: boolean;
  modelsDir?: string;
  baseModel?: string;
}

export interface PhaseResult {
  name: string;
  requests: number;
  seconds: number;
  rps: number;
  p50: number;
  p99: number;
  max: number;
  /** p50 of the first and of the last tenth of the requests (the queue grows during the phase). */
  p50First: number;
  p50Last: number;
  errors: number;
  statuses: Record<string, number>;
  firstError: string | null;
}

export interface EdgeBenchResult {
  healthz: PhaseResult;
  predictions: PhaseResult;
  jobs: number;
  failures: string[];
  /** The end of the server's stderr (where it logs 500s). */
  serverLog: string;
}

const RATE_LIMIT_PER_KEY = 600;
const ROOT = new URL("..", import.meta.url).pathname;

/** Nearest-rank percentile of sorted values. */
function percentile(sorted: number[], p: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))];
}

/**
 * Runs `one` from `connections` concurrent loops for `ms`; `one` answers whether the response was the
 * expected one (a thrown error counts as an error too).
 */
async function drive(
  name: string,
  connections: number,
  ms: number,
  one: (seq: number) => Promise<{ ok: boolean; status: number; detail?: string }>,
): Promise<PhaseResult> {
  const latencies: number[] = [];
  const statuses: Record<string, number> = {};
  let errors = 0;
  let firstError: string | null = null;
  let seq = 0;
  const t0 = performance.now();
  const end = t0 + ms;
  await Promise.all(Array.from({ length: connections }, async () => {
    while (performance.now() < end) {
      const start = performance.now();
      try {
        const r = await one(seq++);
        latencies.push(performance.now() - start);
        statuses[r.status] = (statuses[r.status] ?? 0) + 1;
        if (!r.ok) {
          errors++;
          firstError ??= `HTTP ${r.status}${r.detail ? `: ${r.detail}` : ""}`;
        }
      } catch (e) {
        errors++;
        statuses.exception = (statuses.exception ?? 0) + 1;
        firstError ??= String(e);
      }
    }
  }));
  const seconds = (performance.now() - t0) / 1000;
  const tenth = Math.max(1, Math.floor(latencies.length / 10));
  const p50Of = (xs: number[]) => percentile(xs.sort((a, b) => a - b), 0.5);
  const p50First = p50Of(latencies.slice(0, tenth)), p50Last = p50Of(latencies.slice(-tenth));
  latencies.sort((a, b) => a - b);
  return {
    name,
    requests: latencies.length + (statuses.exception ?? 0),
    seconds,
    rps: latencies.length / seconds,
    p50: percentile(latencies, 0.5),
    p99: percentile(latencies, 0.99),
    max: latencies.at(-1) ?? NaN,
    p50First,
    p50Last,
    errors,
    statuses,
    firstError,
  };
}

/** Starts `edge/main.ts` on a free port; resolves once it listens. */
async function startServer(dataDir: string, modelsDir: string) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "edge/main.ts"],
    cwd: ROOT,
    env: { PORT: "0", DATA_DIR: dataDir, MODELS_DIR: modelsDir, EMBEDDED_WORKER: "0" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let stderr = "";
  (async () => {
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
      stderr = (stderr + chunk).slice(-4000);
    }
  })().catch(() => {});
  const lines = child.stdout.pipeThrough(new TextDecoderStream());
  const reader = lines.getReader();
  let out = "";
  let port = 0;
  const timeout = setTimeout(() => child.kill("SIGKILL"), 60_000);
  try {
    while (!port) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`the server exited before listening:\n${out}${stderr}`);
      out += value;
      port = Number(/listening on http:\/\/localhost:(\d+)/.exec(out)?.[1] ?? 0);
    }
  } finally {
    clearTimeout(timeout);
  }
  // Keep draining its stdout so that the child never blocks on a full pipe.
  (async () => {
    while (!(await reader.read()).done);
  })().catch(() => {});
  return {
    url: `http://127.0.0.1:${port}`,
    stderr: () => stderr,
    async stop() {
      child.kill("SIGTERM");
      const status = await child.status;
      if (!status.success && status.signal !== "SIGTERM") {
        throw new Error(`the server exited with ${status.code}:\n${stderr}`);
      }
    },
  };
}

export async function benchEdge(o: EdgeBenchOptions = {}): Promise<EdgeBenchResult> {
  const connections = o.connections ?? 8;
  const durationS = o.durationS ?? 10;
  const warmupS = o.warmupS ?? 1;
  const modelsDir = o.modelsDir ?? `${ROOT}models`;
  const baseModel = o.baseModel ?? "tiny-shapes";
  const nKeys = o.keys ?? Math.max(4, Math.ceil(((durationS + warmupS) * 4000) / (RATE_LIMIT_PER_KEY - 50)));
  const credits = 100_000_000;
  const price = 1; // num_outputs 1 x steps 1
  const failures: string[] = [];
  const check = (ok: boolean, what: string) => {
    if (!ok) failures.push(what);
  };

  const dataDir = await Deno.makeTempDir({ prefix: "bench-edge-" });
  try {
    // Keys straight into the store the server will open (what `deno task keys create` does), before it starts.
    const nTenants = Math.max(1, Math.min(o.tenants ?? 1, nKeys));
    const keys: string[] = [];
    const tenantIds: string[] = [];
    {
      const kv = await Deno.openKv(`${dataDir}/kv.sqlite3`);
      try {
        const metadata = new KvMetadataStore(kv), broker = new KvJobBroker(kv);
        for (let i = 0; i < nKeys; i++) {
          const t = i % nTenants;
          const r = await issueApiKey(metadata, broker, {
            tenantName: t ? `bench${t}` : "bench",
            credits: i < nTenants ? credits : 0,
          });
          keys.push(r.key);
          if (i < nTenants) tenantIds.push(r.tenant.id);
        }
      } finally {
        kv.close();
      }
    }

    const server = await startServer(dataDir, modelsDir);
    const client = Deno.createHttpClient({ poolMaxIdlePerHost: connections });
    const accepted = new Set<string>();
    const runId = crypto.randomUUID().slice(0, 8);
    const body = JSON.stringify({
      base_model: baseModel,
      input: { prompt: "a large red circle on the left, blue background", steps: 1, seed: 1 },
    });
    const submit = async (idemKey: string, keyIndex: number) => {
      const res = await fetch(`${server.url}/v1/predictions`, {
        method: "POST",
        client,
        headers: {
          authorization: `Bearer ${keys[keyIndex % keys.length]}`,
          "content-type": "application/json",
          "idempotency-key": idemKey,
        },
        body,
      });
      const text = await res.text();
      return { res, text };
    };
    const predict = (phase: string) => async (seq: number) => {
      const { res, text } = await submit(`bench-${runId}-${phase}-${seq}`, seq);
      if (res.status !== 202) return { ok: false, status: res.status, detail: text.slice(0, 300) };
      const job = JSON.parse(text) as { id: string; status: string };
      if (job.status !== "starting") return { ok: false, status: res.status, detail: `status ${job.status}` };
      if (accepted.has(job.id)) return { ok: false, status: res.status, detail: `job id ${job.id} twice` };
      accepted.add(job.id);
      return { ok: true, status: res.status };
    };
    const healthz = async () => {
      const res = await fetch(`${server.url}/healthz`, { client });
      await res.body?.cancel();
      return { ok: res.status === 200, status: res.status };
    };

    let result: EdgeBenchResult;
    try {
      if (warmupS) await drive("warm-up", connections, warmupS * 1000, healthz);
      const h = await drive("GET /healthz", connections, durationS * 1000, healthz);
      if (warmupS) {
        const w = await drive("warm-up", connections, warmupS * 1000, predict("warmup"));
        check(w.errors === 0, `warm-up submissions: ${w.errors} errors (first: ${w.firstError})`);
      }
      const p = await drive("POST /v1/predictions", connections, durationS * 1000, predict("run"));
      check(p.errors === 0, `submissions: ${p.errors} errors (first: ${p.firstError})`);
      if (p.statuses[429]) failures.push(`${p.statuses[429]} answers were 429: raise --keys`);

      // A replay of an earlier Idempotency-Key names the same job and creates nothing.
      const replay = await submit(`bench-${runId}-run-0`, 0);
      const replayed = JSON.parse(replay.text) as { id?: string };
      check(
        replay.res.status === 202 && replay.res.headers.get("idempotent-replayed") === "true" &&
          accepted.has(replayed.id ?? ""),
        `an Idempotency-Key replay answered ${replay.res.status} ${replay.text.slice(0, 200)}`,
      );

      let reserved = 0, balance = 0;
      for (const key of keys.slice(0, nTenants)) {
        const account = await (await fetch(`${server.url}/v1/account`, {
          client,
          headers: { authorization: `Bearer ${key}` },
        })).json() as { balance: number; reserved: number };
        reserved += account.reserved;
        balance += account.balance;
      }
      const spent = accepted.size * price;
      check(
        reserved === spent && balance === nTenants * credits - spent,
        `accounts: ${reserved} reserved, balance ${balance}; expected ${spent} reserved of ${
          nTenants * credits
        }`,
      );
      result = { healthz: h, predictions: p, jobs: accepted.size, failures, serverLog: "" };
    } finally {
      client.close();
      await server.stop();
    }
    result.serverLog = server.stderr();

    // The store, read after the server stopped: exactly the accepted jobs, all still queued.
    const kv = await Deno.openKv(`${dataDir}/kv.sqlite3`);
    try {
      const broker = new KvJobBroker(kv);
      const stored = new Set<string>();
      for (const tenantId of tenantIds) {
        let cursor: string | undefined;
        do {
          const page = await broker.list(tenantId, "prediction", { limit: 1000, cursor });
          for (const j of page.items) {
            stored.add(j.id);
            check(j.state === "queued", `job ${j.id} is ${j.state}, expected queued`);
          }
          cursor = page.next ?? undefined;
        } while (cursor);
      }
      check(
        stored.size === accepted.size && [...accepted].every((id) => stored.has(id)),
        `the store holds ${stored.size} prediction jobs; ${accepted.size} were accepted`,
      );
    } finally {
      kv.close();
    }
    return result;
  } finally {
    if (o.keep) console.log(`data kept in ${dataDir}`);
    else await Deno.remove(dataDir, { recursive: true });
  }
}

function formatPhase(r: PhaseResult): string {
  const statuses = Object.entries(r.statuses).map(([s, n]) => `${s}: ${n}`).join(", ");
  return `${r.name.padEnd(22)} ${r.rps.toFixed(0).padStart(6)} requests/s   p50 ${
    r.p50.toFixed(2)
  } ms   p99 ${r.p99.toFixed(2)} ms   max ${r.max.toFixed(1)} ms   p50 first/last tenth ${
    r.p50First.toFixed(2)
  }/${r.p50Last.toFixed(2)} ms   errors ${r.errors}   (${r.requests} in ${
    r.seconds.toFixed(1)
  } s; ${statuses})${r.firstError ? `\n    first error: ${r.firstError}` : ""}`;
}

/** Runs the bench and prints its figures; false when a correctness check failed. */
export async function runEdgeBench(o: EdgeBenchOptions): Promise<boolean> {
  const load = Deno.loadavg();
  console.log(
    `edge bench: ${o.connections ?? 8} connections, ${
      o.durationS ?? 10
    } s per phase, ${navigator.hardwareConcurrency} cores, load average ${
      load.map((x) => x.toFixed(2)).join(" ")
    }, ${Deno.build.os}-${Deno.build.arch}, deno ${Deno.version.deno}`,
  );
  if (load[0] > navigator.hardwareConcurrency / 2) {
    console.log("warning: the machine is busy (load average above half the cores); figures are under load");
  }
  const r = await benchEdge(o);
  console.log(formatPhase(r.healthz));
  console.log(formatPhase(r.predictions));
  console.log(`jobs accepted and stored: ${r.jobs}`);
  if (r.failures.length) {
    console.log(`FAILED:\n  ${r.failures.join("\n  ")}`);
    if (r.serverLog) console.log(`the server's stderr ends with:\n${r.serverLog.slice(-1500)}`);
    return false;
  }
  console.log("checks: every submission 202 starting, replay ok, credits reserved and jobs stored match");
  return true;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      connections: { type: "string" },
      duration: { type: "string" },
      warmup: { type: "string" },
      keys: { type: "string" },
      tenants: { type: "string" },
      models: { type: "string" },
      model: { type: "string" },
      keep: { type: "boolean" },
      help: { type: "boolean" },
    },
  });
  if (values.help) {
    console.log(
      "usage: deno task bench:edge [--connections 8] [--duration 10] [--warmup 1] [--keys N] [--tenants 1] [--models DIR] [--model ID] [--keep]",
    );
    Deno.exit(0);
  }
  const num = (v: string | undefined) => (v === undefined ? undefined : Number(v));
  const ok = await runEdgeBench({
    connections: num(values.connections),
    durationS: num(values.duration),
    warmupS: num(values.warmup),
    keys: num(values.keys),
    tenants: num(values.tenants),
    modelsDir: values.models,
    baseModel: values.model,
    keep: values.keep,
  });
  if (!ok) Deno.exit(1);
}
