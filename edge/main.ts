/**
 * Entry point of `deno task start`: the embedded default (`embedded.ts`) on PORT (default 8787) with data
 * under DATA_DIR (default ./data) and models from MODELS_DIR (default ./models). WORKER_TOKEN lets outside
 * workers join; WEBHOOKS_ALLOW_PRIVATE=1 allows webhooks to local addresses (development only);
 * RATE_LIMIT_PER_MINUTE sets the requests each API key may make per minute (default 600). One worker
 * runs in this process (its engine in a Worker thread) on ONNX_EP (default cpu); EMBEDDED_WORKER=0 leaves the
 * jobs to outside workers (`deno task worker`).
 */
import { startEmbedded } from "./embedded.ts";
import { startWorker } from "../gpu-worker/worker.ts";

const modelsDir = Deno.env.get("MODELS_DIR") ?? "./models";
const embedded = await startEmbedded({
  port: Number(Deno.env.get("PORT") ?? 8787),
  dataDir: Deno.env.get("DATA_DIR") ?? "./data",
  modelsDir,
  startWorker: Deno.env.get("EMBEDDED_WORKER") === "0"
    ? undefined
    : (edgeUrl, workerToken) => startWorker(edgeUrl, workerToken, { modelsDir, name: "embedded" }),
});

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(signal, async () => {
    await embedded.stop();
    Deno.exit(0);
  });
}
