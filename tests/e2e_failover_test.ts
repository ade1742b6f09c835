/**
 * End to end over real HTTP, a GPU worker dying mid-training: worker A (a `deno task worker` process) trains
 * and uploads checkpoints, is killed with SIGKILL, its lease expires, and worker B leases the job again and
 * finishes it from A's last checkpoint: the job's logs and metrics show the resume, B runs only the remaining
 * steps, and the adapter is the one an uninterrupted run makes. No wall-clock lease: once A has exited, the
 * edge's clock is moved past A's lease and the reaper runs, then on to the end of the retry backoff (A keeps a
 * full 60 s lease while it lives, however slow its heartbeats on a busy machine).
 */
import { assert, assertEquals } from "../gpu-worker/testing.ts";
import { decodeLora, toLoraWeights } from "../gpu-worker/adapters/lora.ts";
import { MODELS, ROOT, starPng, startE2E } from "./e2e_server.ts";

const STEPS = 60;
const LEASE_SECONDS = 60;

Deno.test("a worker killed mid-training: another worker resumes the job from its last checkpoint", async () => {
  let skipped = 0;
  const now = () => Date.now() + skipped;
  const e = await startE2E({ worker: false, leaseSeconds: LEASE_SECONDS, now });
  const workerA = new Deno.Command(Deno.execPath(), {
    args: [
      ...["run", "-A", "scripts/worker.ts", "--edge", e.url, "--models", MODELS, "--name", "worker-a"],
      ...["--checkpoint-every", "5", "--poll-ms", "100"],
    ],
    cwd: ROOT,
    env: { WORKER_TOKEN: e.workerToken },
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let logA = "";
  const drainA = workerA.stderr.pipeThrough(new TextDecoderStream()).pipeTo(
    new WritableStream({ write: (chunk) => void (logA += chunk) }),
  );
  try {
    const images = [];
    for (const seed of [0, 1, 2]) {
      images.push((await (await e.upload(starPng(seed), `s${seed}.png`)).json()).id);
    }
    const input = { images, steps: STEPS, rank: 2, learning_rate: 1e-3, seed: 7, class_word: "star" };
    const start = (destination: string) =>
      e.json("/v1/trainings", { method: "dreambooth", base_model: "tiny-shapes", destination, input });
    const { id } = await (await start("star")).json();

    const checkpointed = await e.poll(
      `/v1/trainings/${id}`,
      (t) => /checkpoint at step \d+ uploaded/.test(String(t.logs)),
    )
      .catch((err) => Promise.reject(new Error(`${err.message}\nworker A:\n${logA}`)));
    workerA.kill("SIGKILL");
    await workerA.status;
    const savedAt = Math.max(
      ...[...String(checkpointed.logs).matchAll(/checkpoint at step (\d+) uploaded/g)].map((m) =>
        Number(m[1])
      ),
    );
    assertEquals(checkpointed.status, "processing", "A was killed mid-training");

    // A has exited: its lease ends (the clock moves past it), the reaper puts the job back in the queue, and the
    // clock moves on to when the job may be leased again.
    const leased = (await e.embedded.edge.broker.get(id))!;
    assertEquals(leased.state, "leased", "A held the job when it died");
    skipped += Math.max(0, leased.lease!.expiresAt - now()) + 1;
    await e.embedded.reap();
    const requeued = (await e.embedded.edge.broker.get(id))!;
    assertEquals([requeued.state, requeued.attempt], ["queued", 1], "the reaper requeued it");
    skipped += Math.max(0, requeued.availableAt - now());

    const workerB = await e.startWorker({ name: "worker-b", checkpointEvery: 5 });
    // 180 s, not the 60 s default: on two busy cores worker B was at step 24 of 60 after 60 s in one run.
    const done = await e.poll(
      `/v1/trainings/${id}`,
      (t) => ["succeeded", "failed", "canceled"].includes(String(t.status)),
      180_000,
    );
    assertEquals(done.status, "succeeded", String(done.error) + String(done.logs));
    const logs = String(done.logs);
    assert(logs.includes("attempt 1: lease expired (worker "), logs);
    const resumed = Number(logs.match(/attempt 2: resuming from the checkpoint at step (\d+)/)?.[1]);
    assert(resumed >= savedAt && resumed < STEPS, `resumed at ${resumed}, A saved ${savedAt}: ${logs}`);
    assert(logs.includes(`worker-b: training ${id} attempt 2`), logs);
    const metrics = done.metrics as Record<string, number>;
    assertEquals(
      [metrics.resumed_from_step, metrics.steps_run],
      [resumed, STEPS - resumed],
      "B ran only the rest",
    );

    // Resumed, not restarted: the adapter equals an uninterrupted run's (same input, same seed).
    const again = (await (await start("star-again")).json()).id;
    const straight = await e.poll(`/v1/trainings/${again}`, (t) => t.status === "succeeded");
    assertEquals((straight.metrics as Record<string, number>).resumed_from_step, 0);
    // B counts a job once the edge has answered its completion, which may come after the status poll saw
    // "succeeded": stopping B waits for its loop to finish (the event), then its counts are final.
    await workerB.stop();
    assertEquals(
      [workerB.stats.completed, workerB.stats.failed],
      [2, 0],
      "B ran the resumed job and this one",
    );
    const weights = async (t: Record<string, unknown>) =>
      toLoraWeights(decodeLora(
        new Uint8Array(
          await (await e.api(new URL((t.output as { weights: string }).weights).pathname)).arrayBuffer(),
        ),
        "x",
      )).modules;
    const [a, b] = [await weights(done), await weights(straight)];
    assertEquals(a.size, b.size);
    for (const [path, m] of b) {
      assertEquals(a.get(path)!.down, m.down, `${path} down`);
      assertEquals(a.get(path)!.up, m.up, `${path} up`);
    }
  } finally {
    try {
      workerA.kill("SIGKILL");
    } catch { /* already dead */ }
    await drainA;
    await e.stop();
  }
});
