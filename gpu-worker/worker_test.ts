/**
 * The worker against a fake edge: an in-memory queue behind the real worker protocol over real HTTP (every
 * request the worker sends is checked with the shared schemas). Covers predictions (fields mapped onto the
 * pipeline, heartbeats firing while the engine runs, previews, adapters from cached blobs, img2img), bad input
 * (not retried), cancellation, trainings (images, captions, checkpoints uploaded with heartbeats), a worker
 * killed mid-training whose job another worker resumes from the checkpoint, and a worker that stops and hands
 * its job back.
 */
import { assert, assertEquals } from "./testing.ts";
import {
  type BlobRef,
  CompleteRequest,
  FailRequest,
  HeartbeatRequest,
  type JobKind,
  type LeaseEnvelope,
  RegisterRequest,
} from "../shared/worker_protocol.ts";
import { sha256Hex } from "../shared/blob_store.ts";
import { GpuWorker, type GpuWorkerOptions } from "./worker.ts";
import { EngineRunner } from "./ort/runner.ts";
import { type LoraWeights, StableDiffusionPipeline } from "./pipelines/stable_diffusion.ts";
import { decodePng, encodePng } from "./image/png.ts";
import { decodeLora, encodeLora, LORA_FILE_NAME, type LoraAdapter, toLoraWeights } from "./adapters/lora.ts";
import { decodeCheckpoint } from "./training/checkpoint.ts";
import { renderScene } from "./shapesworld/render.ts";
import { sampleScene } from "./shapesworld/world.ts";
import { Rng } from "./random.ts";

const MODELS = new URL("../models", import.meta.url).pathname;
const TOKEN = "wkr_test_token";

interface FakeJob {
  id: string;
  kind: JobKind;
  baseModel: string;
  method?: string;
  input: Record<string, unknown>;
  blobs: Record<string, BlobRef>;
  state: "queued" | "leased" | "succeeded" | "failed" | "canceled";
  attempt: number;
  leaseId: string;
  workerId: string;
  expiresAt: number;
  cancel: boolean;
  checkpoint: BlobRef | null;
  heartbeats: HeartbeatRequest[];
  logs: string[];
  outputs: CompleteRequest["outputs"];
  metrics: Record<string, number>;
  adapter?: CompleteRequest["adapter"];
  error: string | null;
  retryable: boolean | null;
}

/** The edge's side of the worker protocol, in memory; enough to drive workers through every path. */
class FakeEdge {
  readonly jobs = new Map<string, FakeJob>();
  readonly blobs = new Map<string, Uint8Array>();
  readonly blobGets: string[] = [];
  readonly workers = new Map<string, RegisterRequest>();
  /** Called on every accepted heartbeat (tests cancel or kill from here). */
  onHeartbeat: (job: FakeJob, req: HeartbeatRequest) => void = () => {};
  private readonly server: Deno.HttpServer<Deno.NetAddr>;
  private n = 0;

  constructor(readonly leaseSeconds = 30, readonly maxAttempts = 3) {
    this.server = Deno.serve(
      { port: 0, hostname: "127.0.0.1", onListen: () => {} },
      (req) => this.handle(req),
    );
  }

  get url(): string {
    return `http://127.0.0.1:${this.server.addr.port}`;
  }

  async close() {
    await this.server.shutdown();
  }

  async putBlob(bytes: Uint8Array): Promise<BlobRef> {
    const sha256 = await sha256Hex(bytes);
    this.blobs.set(sha256, bytes);
    return { sha256, size: bytes.length };
  }

  enqueue(j: Pick<FakeJob, "kind" | "input"> & Partial<FakeJob>): string {
    const id = `job_${++this.n}`;
    this.jobs.set(id, {
      baseModel: "tiny-shapes",
      blobs: {},
      state: "queued",
      attempt: 0,
      leaseId: "",
      workerId: "",
      expiresAt: 0,
      cancel: false,
      checkpoint: null,
      heartbeats: [],
      logs: [],
      outputs: [],
      metrics: {},
      error: null,
      retryable: null,
      ...j,
      id,
    });
    return id;
  }

  /** Resolves with the job once it is in a final state (or `until` holds). */
  async wait(
    id: string,
    until = (j: FakeJob) => ["succeeded", "failed", "canceled"].includes(j.state),
    ms = 60_000,
  ) {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      const j = this.jobs.get(id)!;
      if (until(j)) return j;
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`job ${id} still ${this.jobs.get(id)!.state} after ${ms} ms`);
  }

  private live(id: string, body: { leaseId: string }): FakeJob | Response {
    const j = this.jobs.get(id);
    if (!j) return new Response("no such job", { status: 404 });
    if (j.state !== "leased" || j.leaseId !== body.leaseId) {
      return new Response("stale lease", { status: 409 });
    }
    return j;
  }

  private async handle(req: Request): Promise<Response> {
    if (req.headers.get("authorization") !== `Bearer ${TOKEN}`) return new Response("no", { status: 401 });
    const path = new URL(req.url).pathname.replace(/^\/internal\/workers/, "");
    const json = (v: unknown) => Response.json(v);
    if (req.method === "PUT" && path === "/blobs") {
      return json(await this.putBlob(new Uint8Array(await req.arrayBuffer())));
    }
    if (req.method === "GET" && path.startsWith("/blobs/")) {
      const sha = path.slice("/blobs/".length);
      this.blobGets.push(sha);
      const b = this.blobs.get(sha);
      return b ? new Response(b as Uint8Array<ArrayBuffer>) : new Response("no blob", { status: 404 });
    }
    const body = await req.json();
    if (path === "/register") {
      const r = RegisterRequest.parse(body);
      const workerId = `wkr_${this.workers.size + 1}`;
      this.workers.set(workerId, r);
      return json({ workerId, leaseSeconds: this.leaseSeconds });
    }
    if (path === "/lease") {
      const w = this.workers.get(body.workerId);
      if (!w) return new Response("unknown worker", { status: 404 });
      for (const j of this.jobs.values()) {
        if (j.state === "leased" && j.expiresAt < Date.now()) {
          j.state = "queued";
          j.logs.push(`attempt ${j.attempt}: lease expired`);
        }
      }
      const j = [...this.jobs.values()].find((j) =>
        j.state === "queued" && w.models.includes(j.baseModel) && w.kinds.includes(j.kind)
      );
      if (!j) return new Response(null, { status: 204 });
      Object.assign(j, {
        state: "leased",
        attempt: j.attempt + 1,
        leaseId: crypto.randomUUID(),
        workerId: body.workerId,
        expiresAt: Date.now() + this.leaseSeconds * 1000,
      });
      const leased: LeaseEnvelope = {
        id: j.id,
        kind: j.kind,
        leaseId: j.leaseId,
        leaseSeconds: this.leaseSeconds,
        attempt: j.attempt,
        baseModel: j.baseModel,
        method: j.method,
        input: j.input,
        blobs: j.blobs,
        checkpoint: j.checkpoint,
      };
      return json(leased);
    }
    const m = path.match(/^\/jobs\/([^/]+)\/(heartbeat|complete|fail)$/);
    if (!m) return new Response("no route", { status: 404 });
    const [, id, what] = m;
    if (what === "heartbeat") {
      const hb = HeartbeatRequest.parse(body);
      const j = this.live(id, hb);
      if (j instanceof Response) return j;
      if (hb.checkpoint) {
        assert(this.blobs.has(hb.checkpoint.sha256), "checkpoint uploaded before the heartbeat");
        j.checkpoint = hb.checkpoint;
      }
      j.heartbeats.push(hb);
      j.logs.push(...hb.logs ?? []);
      j.expiresAt = Date.now() + this.leaseSeconds * 1000;
      this.onHeartbeat(j, hb);
      return json({ cancel: j.cancel, leaseSeconds: this.leaseSeconds });
    }
    if (what === "complete") {
      const c = CompleteRequest.parse(body);
      const j = this.live(id, c);
      if (j instanceof Response) return j;
      for (const o of c.outputs) assert(this.blobs.has(o.blob.sha256), `output ${o.name} uploaded`);
      Object.assign(j, {
        state: j.cancel ? "canceled" : "succeeded",
        outputs: c.outputs,
        metrics: c.metrics ?? {},
        adapter: c.adapter,
      });
      return new Response(null, { status: 204 });
    }
    const f = FailRequest.parse(body);
    const j = this.live(id, f);
    if (j instanceof Response) return j;
    j.logs.push(`attempt ${j.attempt} failed: ${f.error}`);
    j.error = f.error;
    j.retryable = f.retryable;
    j.state = j.cancel ? "canceled" : f.retryable && j.attempt < this.maxAttempts ? "queued" : "failed";
    return new Response(null, { status: 204 });
  }
}

async function withEdge(
  fn: (edge: FakeEdge, start: (o?: Partial<GpuWorkerOptions>) => Promise<GpuWorker>) => Promise<void>,
  leaseSeconds = 30,
) {
  const edge = new FakeEdge(leaseSeconds);
  const workers: GpuWorker[] = [];
  const start = async (o: Partial<GpuWorkerOptions> = {}) => {
    const w = await GpuWorker.start({
      edgeUrl: edge.url,
      token: TOKEN,
      modelsDir: MODELS,
      idlePollMs: 50,
      heartbeatMs: 100,
      log: () => {},
      ...o,
    });
    workers.push(w);
    return w;
  };
  try {
    await fn(edge, start);
  } finally {
    for (const w of workers) await w.stop();
    await edge.close();
  }
}

/** The reference: the same pipeline driven directly, for byte-for-byte comparisons. */
let reference: Promise<{ runner: EngineRunner; pipe: StableDiffusionPipeline }> | null = null;
function referencePipeline() {
  reference ??= (async () => {
    const runner = new EngineRunner();
    return { runner, pipe: await StableDiffusionPipeline.load(`${MODELS}/tiny-shapes`, runner) };
  })();
  return reference.then((r) => r.pipe);
}
async function releaseReference() {
  if (!reference) return;
  const { runner, pipe } = await reference;
  await pipe.release();
  runner.terminate();
  reference = null;
}

function randomLora(pipe: StableDiffusionPipeline, seed: number, rank = 2): LoraAdapter {
  const rng = new Rng(seed);
  const modules: LoraAdapter["modules"] = new Map();
  for (const m of pipe.loraModules) {
    modules.set(m.path, {
      down: rng.normal(rank * m.inFeatures, 0.3),
      up: rng.normal(m.outFeatures * rank, 0.3),
      inFeatures: m.inFeatures,
      outFeatures: m.outFeatures,
    });
  }
  return { name: `random-${seed}`, rank, alpha: rank, modules };
}

function starImage(seed: number) {
  return renderScene(sampleScene(new Rng(seed), {
    objectCount: 1,
    shapes: ["star"],
    colours: ["purple"],
    textures: ["checkered"],
    backgrounds: ["white"],
  }));
}

Deno.test("a prediction runs on the engine thread while heartbeats fire: progress, previews, the pipeline's exact PNGs", async () => {
  await withEdge(async (edge, start) => {
    await start({ previewEvery: 2, previewIntervalMs: 0, heartbeatMs: 50 });
    const input = {
      prompt: "a large red circle on the left, blue background",
      negative_prompt: "green",
      num_outputs: 2,
      steps: 20,
      guidance_scale: 5,
      scheduler: "euler_a",
      seed: 11,
    };
    const id = edge.enqueue({ kind: "prediction", input });
    const job = await edge.wait(id);
    assertEquals(job.state, "succeeded", job.error ?? "");
    assertEquals(job.outputs.map((o) => [o.name, o.contentType]), [["out-0.png", "image/png"], [
      "out-1.png",
      "image/png",
    ]]);
    assertEquals(job.metrics.seed, 11);
    const steps = job.heartbeats.flatMap((h) => h.progress ? [h.progress.step] : []);
    assert(steps.length >= 3, `heartbeats during the run: ${steps}`);
    assert(steps.every((s, i) => i === 0 || s >= steps[i - 1]) && steps.at(-1) === 20, `progress ${steps}`);
    const previews = job.heartbeats.flatMap((h) => h.preview ? [h.preview] : []);
    assert(previews.length >= 1, "at least one preview");
    const preview = decodePng(Uint8Array.from(atob(previews[0]), (c) => c.charCodeAt(0)));
    assertEquals([preview.width, preview.height], [64, 64]);
    assert(job.logs.some((l) => l.includes("generated 2 image(s) with seed 11")), job.logs.join("\n"));

    const direct = await (await referencePipeline()).generate({
      prompt: input.prompt,
      negativePrompt: input.negative_prompt,
      n: 2,
      steps: 20,
      guidanceScale: 5,
      scheduler: "euler_a",
      seed: 11,
    });
    for (const [i, o] of job.outputs.entries()) {
      assertEquals(
        o.blob.sha256,
        await sha256Hex(encodePng(direct.images[i])),
        `image ${i} is the pipeline's`,
      );
    }
  });
});

Deno.test("reference_image: SeeCoder's embeddings replace the prompt; negative_prompt ignored with a log line", async () => {
  const pipe = await referencePipeline();
  await withEdge(async (edge, start) => {
    await start();
    const ref = starImage(9);
    const input = { prompt: "", negative_prompt: "green", reference_image: "file_ref", steps: 4, seed: 3 };
    const id = edge.enqueue({
      kind: "prediction",
      input,
      blobs: { file_ref: await edge.putBlob(encodePng(ref)) },
    });
    const job = await edge.wait(id);
    assertEquals(job.state, "succeeded", job.error ?? job.logs.join("\n"));
    assert(
      job.logs.some((l) => l.includes("negative_prompt is ignored with reference_image")),
      job.logs.join("\n"),
    );
    const direct = await pipe.generate({ referenceImage: ref, steps: 4, seed: 3 });
    assertEquals(
      job.outputs[0].blob.sha256,
      await sha256Hex(encodePng(direct.images[0])),
      "CFG 2.0, zeros uncond",
    );
  });
});

Deno.test("adapters and img2img: LoRA blobs fetched once per sha256, applied as the pipeline applies them", async () => {
  const pipe = await referencePipeline();
  await withEdge(async (edge, start) => {
    await start();
    const lora = randomLora(pipe, 3);
    const loraRef = await edge.putBlob(encodeLora(lora));
    const init = starImage(5);
    const imageRef = await edge.putBlob(encodePng(init));
    const input = {
      prompt: "a purple star",
      steps: 6,
      seed: 4,
      image: "file_init",
      strength: 0.7,
      adapters: [{ id: "adp_rex", scale: 0.8 }],
    };
    const blobs = { "adapter:adp_rex": loraRef, file_init: imageRef };
    const a = edge.enqueue({ kind: "prediction", input, blobs });
    const b = edge.enqueue({ kind: "prediction", input: { ...input, seed: 5 }, blobs });
    const [ja, jb] = [await edge.wait(a), await edge.wait(b)];
    assertEquals([ja.state, jb.state], ["succeeded", "succeeded"], `${ja.error} ${jb.error}`);
    assertEquals(edge.blobGets.filter((s) => s === loraRef.sha256).length, 1, "the LoRA is downloaded once");
    const direct = await pipe.generate({
      prompt: "a purple star",
      steps: 6,
      seed: 4,
      image: init,
      strength: 0.7,
      adapters: [{ lora: toLoraWeights(decodeLora(encodeLora(lora), "x")), scale: 0.8 }],
    });
    assertEquals(ja.outputs[0].blob.sha256, await sha256Hex(encodePng(direct.images[0])));
    const plain = await pipe.generate({
      prompt: "a purple star",
      steps: 6,
      seed: 4,
      image: init,
      strength: 0.7,
    });
    assert(
      ja.outputs[0].blob.sha256 !== await sha256Hex(encodePng(plain.images[0])),
      "the adapter changes the image",
    );
  });
});

Deno.test("bad input fails at once and is not retried; the worker goes on to the next job", async () => {
  const pipe = await referencePipeline();
  await withEdge(async (edge, start) => {
    await start();
    const width = edge.enqueue({
      kind: "prediction",
      input: { prompt: "a red circle", width: 30, steps: 2 },
    });
    const missing = edge.enqueue({
      kind: "prediction",
      input: { prompt: "x", steps: 2, adapters: [{ id: "adp_x" }] },
    });
    const foreign = randomLora(pipe, 1);
    foreign.modules = new Map([[
      "mid_block.attentions.0.transformer_blocks.7.attn1.to_q",
      [...foreign.modules.values()][0],
    ]]);
    const wrongModel = edge.enqueue({
      kind: "prediction",
      input: { prompt: "x", steps: 2, adapters: [{ id: "adp_f" }] },
      blobs: { "adapter:adp_f": await edge.putBlob(encodeLora(foreign)) },
    });
    const reference = edge.enqueue({
      kind: "prediction",
      input: { prompt: "x", reference_image: "f" },
    });
    const method = edge.enqueue({
      kind: "training",
      method: "cidm",
      input: { images: ["f"], library: "pets" },
    });
    const mergeMethod = edge.enqueue({
      kind: "merge",
      method: "linear",
      input: { method: "linear", adapters: [{ id: "a" }, { id: "b" }] },
    });
    // Parsed once with the method's schema: a field the schema does not know fails the job by name.
    const unknownField = edge.enqueue({
      kind: "training",
      method: "dreambooth",
      input: { images: ["f"], steps: 2, colour: "red" },
    });
    const ok = edge.enqueue({ kind: "prediction", input: { prompt: "a red circle", steps: 2, seed: 1 } });
    const cases: [string, string][] = [
      [width, "width must be a multiple of 16 between 16 and 4096, got 30"],
      [missing, `input.adapters[0]: no blob for adapter "adp_x"`],
      [wrongModel, `adapter "adp_f" targets 1 module(s) the base model has no LoRA slot for`],
      [reference, `input.reference_image: no blob for file "f"`],
      [method, `training method "cidm" is not served by this worker`],
      [mergeMethod, `merge method "linear" is not served by this worker`],
      [unknownField, `invalid input: input: Unrecognized key: "colour"`],
    ];
    for (const [id, message] of cases) {
      const j = await edge.wait(id);
      assertEquals([j.state, j.retryable, j.attempt], ["failed", false, 1], `${id}: ${j.error}`);
      assert(j.error!.includes(message), `${id}: "${j.error}" should include "${message}"`);
    }
    assertEquals((await edge.wait(ok)).state, "succeeded");
    const registration = [...edge.workers.values()][0];
    assertEquals(
      [registration.methods, registration.merges, registration.features],
      [["dreambooth", "custom_diffusion", "concept_slider"], ["custom_diffusion"], [
        "img2img",
        "inpainting",
        "regions",
        "sliders",
        "reference_image",
      ]],
      "it advertises what it serves (reference_image: models/tiny-shapes has a SeeCoder)",
    );
  });
});

Deno.test("a heartbeat answering cancel stops the running job, which fails as canceled", async () => {
  await withEdge(async (edge, start) => {
    await start();
    const id = edge.enqueue({ kind: "prediction", input: { prompt: "a blue square", steps: 400, seed: 2 } });
    edge.onHeartbeat = (j, hb) => {
      if (j.id === id && (hb.progress?.step ?? 0) >= 1) j.cancel = true;
    };
    const job = await edge.wait(id);
    assertEquals([job.state, job.error, job.retryable], ["canceled", "canceled", false]);
    const last = job.heartbeats.at(-1)?.progress;
    assert(last && last.step < 400, `stopped early: ${JSON.stringify(last)}`);
    const next = edge.enqueue({ kind: "prediction", input: { prompt: "a blue square", steps: 2, seed: 2 } });
    assertEquals((await edge.wait(next)).state, "succeeded", "the worker serves the next job");
  });
});

Deno.test("a training fine-tunes a LoRA from image blobs (zip entries with captions), checkpoints go out with heartbeats", async () => {
  await releaseReference();
  await withEdge(async (edge, start) => {
    await start({ checkpointEvery: 2 });
    const pngs = [0, 1, 2].map((i) => encodePng(starImage(i)));
    // As the edge plans it: an image file by its id, a zip's entries as `<zip id>/<entry>` with captions.
    const blobs = {
      file_1: await edge.putBlob(pngs[2]),
      "file_zip/a.png": await edge.putBlob(pngs[0]),
      "file_zip/b.png": await edge.putBlob(pngs[1]),
    };
    const input = {
      images: ["file_1", "file_zip/a.png", "file_zip/b.png"],
      captions: { "file_zip/a.png": "a sks star, checkered" },
      destination: "rex",
      steps: 6,
      rank: 2,
      learning_rate: 1e-3,
      seed: 3,
      class_word: "star",
    };
    const id = edge.enqueue({ kind: "training", method: "dreambooth", input, blobs });
    const job = await edge.wait(id);
    assertEquals(job.state, "succeeded", job.error ?? job.logs.join("\n"));
    assertEquals(job.outputs.map((o) => o.name), [LORA_FILE_NAME]);
    assertEquals(job.adapter, {
      kind: "concept",
      method: "dreambooth",
      tokens: ["sks"],
      class_word: "star",
      full_model: false,
    }, "the worker describes the adapter it made");
    const lora = decodeLora(edge.blobs.get(job.outputs[0].blob.sha256)!, LORA_FILE_NAME);
    assertEquals([lora.rank, lora.info?.prompt, lora.info?.steps], [2, "a sks star", 6]);
    const checkpoints = job.heartbeats.flatMap((h) => h.checkpoint ? [h.checkpoint] : []);
    const steps = checkpoints.map((c) => decodeCheckpoint(edge.blobs.get(c.sha256)!).step);
    assertEquals(steps, [2, 4], "each checkpoint but the last is uploaded once");
    assertEquals([job.metrics.steps_run, job.metrics.resumed_from_step], [6, 0]);
    assert(
      job.metrics.eval_loss_after > 0 && job.metrics.trained_parameters > 0,
      JSON.stringify(job.metrics),
    );
    assert(
      job.logs.some((l) => l.includes("training a rank-2 LoRA on 3 image(s) (1 captioned)")),
      job.logs.join("\n"),
    );
    assert(job.heartbeats.some((h) => h.progress?.loss !== undefined), "loss in progress");
  });
});

function loraTensors(bytes: Uint8Array): LoraWeights["modules"] {
  return toLoraWeights(decodeLora(bytes, "x")).modules;
}

Deno.test({
  name: "a worker killed mid-training: the lease expires and another worker resumes from the last checkpoint",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await withEdge(async (edge, start) => {
      const pngs = [0, 1, 2].map((i) => encodePng(starImage(i)));
      const blobs = Object.fromEntries(
        await Promise.all(pngs.map(async (p, i) => [`f${i}`, await edge.putBlob(p)])),
      );
      const input = {
        images: ["f0", "f1", "f2"],
        steps: 30,
        rank: 2,
        learning_rate: 1e-3,
        seed: 9,
        class_word: "star",
      };
      const workerA = await start({ checkpointEvery: 4, name: "A", heartbeatMs: 100 });
      const id = edge.enqueue({ kind: "training", method: "dreambooth", input, blobs });
      let killedAt = -1;
      edge.onHeartbeat = (j, hb) => {
        if (j.id === id && hb.checkpoint && killedAt < 0) {
          killedAt = decodeCheckpoint(edge.blobs.get(hb.checkpoint.sha256)!).step;
          workerA.kill();
        }
      };
      await edge.wait(id, (j) => killedAt >= 0 && j.state === "leased");
      const progressA = edge.jobs.get(id)!.heartbeats.at(-1)?.progress?.step ?? 0;
      assert(progressA < 30, `A was killed mid-training (at step ${progressA})`);
      await start({ checkpointEvery: 4, name: "B" });
      const job = await edge.wait(id);
      assertEquals(job.state, "succeeded", job.error ?? job.logs.join("\n"));
      assertEquals(job.attempt, 2);
      assertEquals(job.workerId, "wkr_2", "worker B finished it");
      assertEquals(job.metrics.resumed_from_step, killedAt);
      assertEquals(job.metrics.steps_run, 30 - killedAt, "B ran only the steps after the checkpoint");
      assert(job.logs.includes("attempt 1: lease expired"), job.logs.join("\n"));
      assert(job.logs.some((l) => l.includes(`attempt 2: resuming from the checkpoint at step ${killedAt}`)));

      // Resumed, not restarted: the adapter equals an uninterrupted run's.
      edge.onHeartbeat = () => {};
      const again = await edge.wait(edge.enqueue({ kind: "training", method: "dreambooth", input, blobs }));
      assertEquals(again.metrics.resumed_from_step, 0);
      const resumed = loraTensors(edge.blobs.get(job.outputs[0].blob.sha256)!);
      const straight = loraTensors(edge.blobs.get(again.outputs[0].blob.sha256)!);
      for (const [path, m] of straight) {
        assertEquals(resumed.get(path)!.down, m.down, `${path} down`);
        assertEquals(resumed.get(path)!.up, m.up, `${path} up`);
      }
    }, 2);
  },
});

Deno.test("a stopping worker hands its training back with the last checkpoint; the next worker resumes it", async () => {
  await withEdge(async (edge, start) => {
    const blobs = { f0: await edge.putBlob(encodePng(starImage(0))) };
    const input = { images: ["f0"], steps: 400, rank: 2, seed: 1, class_word: "star" };
    const a = await start({ checkpointEvery: 1000, name: "A" });
    const id = edge.enqueue({ kind: "training", method: "dreambooth", input, blobs });
    await edge.wait(id, (j) => (j.heartbeats.at(-1)?.progress?.step ?? 0) >= 3);
    await a.stop();
    const handed = edge.jobs.get(id)!;
    assertEquals([handed.state, handed.retryable], ["queued", true], handed.error ?? "");
    assert(handed.checkpoint !== null, "the checkpoint saved on stop went along");
    const step = decodeCheckpoint(edge.blobs.get(handed.checkpoint!.sha256)!).step;
    assert(step >= 3 && step < 400, `checkpoint at step ${step}`);
    // B resumes from there; cancel it once it has shown that, to keep the test short.
    edge.onHeartbeat = (j) => {
      if (j.attempt === 2 && j.logs.some((l) => l.includes(`resuming from the checkpoint at step ${step}`))) {
        j.cancel = true;
      }
    };
    await start({ name: "B" });
    assertEquals((await edge.wait(id)).state, "canceled");
  });
});

Deno.test("a lost lease (409 on heartbeat) drops the job without completing it; the worker goes on", async () => {
  await withEdge(async (edge, start) => {
    await start();
    const id = edge.enqueue({ kind: "prediction", input: { prompt: "a red circle", steps: 400, seed: 1 } });
    edge.onHeartbeat = (j) => {
      if (j.id === id) j.leaseId = "handed-to-another-worker";
    };
    await edge.wait(id, (j) => j.leaseId === "handed-to-another-worker");
    const next = edge.enqueue({ kind: "prediction", input: { prompt: "a red circle", steps: 2, seed: 1 } });
    assertEquals((await edge.wait(next)).state, "succeeded", "the worker moved on");
    const dropped = edge.jobs.get(id)!;
    assertEquals(
      [dropped.state, dropped.outputs.length, dropped.error],
      ["leased", 0, null],
      "no complete, no fail",
    );
  });
});

Deno.test("deno task worker: a worker process serves jobs, and SIGTERM hands its running training back", async () => {
  await withEdge(async (edge) => {
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        ...["run", "-A", "scripts/worker.ts", "--edge", edge.url, "--models", MODELS, "--name", "cli"],
        ...["--heartbeat-ms", "100", "--poll-ms", "50", "--checkpoint-every", "1000"],
      ],
      cwd: new URL("..", import.meta.url).pathname,
      env: { WORKER_TOKEN: TOKEN },
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const output = child.output();
    const p = edge.enqueue({ kind: "prediction", input: { prompt: "a red circle", steps: 2, seed: 1 } });
    assertEquals((await edge.wait(p)).state, "succeeded");
    assertEquals([...edge.workers.values()][0].name, "cli");
    const blobs = { f0: await edge.putBlob(encodePng(starImage(0))) };
    const t = edge.enqueue({
      kind: "training",
      method: "dreambooth",
      input: { images: ["f0"], steps: 400 },
      blobs,
    });
    await edge.wait(t, (j) => (j.heartbeats.at(-1)?.progress?.step ?? 0) >= 2);
    child.kill("SIGTERM");
    const { code, stderr } = await output;
    const log = new TextDecoder().decode(stderr);
    assertEquals(code, 0, log);
    assert(log.includes("registered as wkr_1") && log.includes("stopping: handing running jobs back"), log);
    const job = edge.jobs.get(t)!;
    assertEquals([job.state, job.retryable, job.error], [
      "queued",
      true,
      "worker cli stopped; job handed back",
    ]);
    assert(job.checkpoint !== null, "with a checkpoint");
  });
});

Deno.test("deno task worker prints the usage without an edge or token, and refuses a bad provider", async () => {
  const run = (args: string[]) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "scripts/worker.ts", ...args],
      cwd: new URL("..", import.meta.url).pathname,
      env: { WORKER_TOKEN: "", EDGE_URL: "" },
      stdout: "piped",
      stderr: "piped",
    }).output();
  const usage = await run(["--models", MODELS]);
  assertEquals(usage.code, 2);
  assert(new TextDecoder().decode(usage.stderr).includes("usage: deno task worker --edge URL --token T"));
  const ep = await run(["--edge", "http://127.0.0.1:9", "--token", "t", "--ep", "tpu"]);
  assertEquals(ep.code, 1);
  assert(new TextDecoder().decode(ep.stderr).includes(`Unsupported execution provider "tpu"`));
});

Deno.test("a worker the edge forgot (404 on lease, e.g. after an edge restart) registers again", async () => {
  await withEdge(async (edge, start) => {
    const w = await start();
    edge.workers.clear();
    const id = edge.enqueue({ kind: "prediction", input: { prompt: "a red circle", steps: 2, seed: 1 } });
    const job = await edge.wait(id);
    assertEquals([job.state, job.workerId, w.workerId], ["succeeded", "wkr_1", "wkr_1"]);
    assertEquals(edge.workers.size, 1);
  });
});

Deno.test("several workers serve one edge at once, each job run by exactly one of them", async () => {
  await withEdge(async (edge, start) => {
    const [a, b] = await Promise.all([start({ name: "a" }), start({ name: "b" })]);
    const ids = [1, 2, 3, 4, 5, 6].map((seed) =>
      edge.enqueue({ kind: "prediction", input: { prompt: "a green triangle", steps: 8, seed } })
    );
    const jobs = [];
    for (const id of ids) jobs.push(await edge.wait(id));
    assertEquals(jobs.map((j) => [j.state, j.attempt]), ids.map(() => ["succeeded", 1]));
    const by = [...new Set(jobs.map((j) => j.workerId))].sort();
    assertEquals(by, [a.workerId, b.workerId].sort(), "both took jobs");
    // A worker counts a completion when the edge has answered its complete call, which may be just after the
    // edge already reports the job done: give the last count a moment.
    for (let i = 0; i < 100 && a.stats.completed + b.stats.completed < 6; i++) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assertEquals(a.stats.completed + b.stats.completed, 6);
  });
});
