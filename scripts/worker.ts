/**
 * Command-line GPU worker: serves the base models under --models to the edge at --edge, leasing prediction and
 * training jobs with the worker token. SIGINT/SIGTERM hand the running job back (with its last checkpoint) and
 * exit; a second signal exits at once.
 *
 * Usage: deno task worker --edge http://localhost:8787 --token T --models ./models [--ep cpu|cuda|webgpu]
 *          [--name NAME] [--kinds prediction,training,merge] [--instances N] [--work-dir DIR]
 *          [--heartbeat-ms MS] [--poll-ms MS] [--checkpoint-every STEPS]
 * The token may come from WORKER_TOKEN, the edge from EDGE_URL, the models from MODELS_DIR and the provider from
 * ONNX_EP instead.
 */
import { parseArgs } from "node:util";
import { GpuWorker } from "../gpu-worker/worker.ts";
import { parseExecutionProvider } from "../gpu-worker/ort/session.ts";
import { JobKind } from "../shared/worker_protocol.ts";
import { numberFlag } from "./flags.ts";

const USAGE = `usage: deno task worker --edge URL --token T --models DIR [--ep cpu|cuda|webgpu] [--name NAME]
  [--kinds prediction,training,merge] [--instances N] [--work-dir DIR] [--heartbeat-ms MS] [--poll-ms MS]
  [--checkpoint-every STEPS]   (or WORKER_TOKEN, EDGE_URL, MODELS_DIR, ONNX_EP in the environment)`;

const OPTIONS = {
  edge: { type: "string" },
  token: { type: "string" },
  models: { type: "string" },
  ep: { type: "string" },
  name: { type: "string" },
  kinds: { type: "string" },
  instances: { type: "string" },
  "work-dir": { type: "string" },
  "heartbeat-ms": { type: "string" },
  "poll-ms": { type: "string" },
  "checkpoint-every": { type: "string" },
  help: { type: "boolean" },
} as const;

const int = (name: string, v: string | undefined) => numberFlag(name, v, { integer: true, min: 1 });

if (import.meta.main) {
  let values;
  try {
    values = parseArgs({ args: Deno.args, options: OPTIONS }).values;
  } catch (e) {
    console.error(`error: ${(e as Error).message}\n${USAGE}`);
    Deno.exit(2);
  }
  const edgeUrl = values.edge ?? Deno.env.get("EDGE_URL");
  const token = values.token ?? Deno.env.get("WORKER_TOKEN");
  if (values.help || !edgeUrl || !token) {
    console.error(USAGE);
    Deno.exit(values.help ? 0 : 2);
  }
  const workers: GpuWorker[] = [];
  try {
    const ep = parseExecutionProvider(values.ep ?? Deno.env.get("ONNX_EP") ?? "cpu");
    const kinds = values.kinds ? values.kinds.split(",").map((k) => JobKind.parse(k.trim())) : undefined;
    const instances = int("instances", values.instances) ?? 1;
    const name = values.name ?? `${Deno.hostname()}-${Deno.pid}`;
    for (let i = 0; i < instances; i++) {
      workers.push(
        await GpuWorker.start({
          edgeUrl,
          token,
          modelsDir: values.models ?? Deno.env.get("MODELS_DIR") ?? "./models",
          ep,
          kinds,
          name: instances > 1 ? `${name}-${i}` : name,
          workDir: values["work-dir"] ? `${values["work-dir"]}/${i}` : undefined,
          heartbeatMs: int("heartbeat-ms", values["heartbeat-ms"]),
          idlePollMs: int("poll-ms", values["poll-ms"]),
          checkpointEvery: int("checkpoint-every", values["checkpoint-every"]),
        }),
      );
    }
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    Deno.exit(1);
  }
  let signals = 0;
  const shutdown = () => {
    if (++signals > 1) Deno.exit(130);
    console.error("stopping: handing running jobs back (signal again to exit now)");
    Promise.all(workers.map((w) => w.stop())).then(() => Deno.exit(0));
  };
  Deno.addSignalListener("SIGINT", shutdown);
  Deno.addSignalListener("SIGTERM", shutdown);
}
