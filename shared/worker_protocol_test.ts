import { assert, assertEquals } from "../gpu-worker/testing.ts";
import {
  CompleteRequest,
  LeasedJob,
  type LeasedTraining,
  LeaseEnvelope,
  RegisterRequest,
} from "./worker_protocol.ts";

const ENVELOPE = {
  id: "t_1",
  leaseId: "lease_1",
  leaseSeconds: 60,
  attempt: 1,
  baseModel: "tiny-shapes",
  blobs: {},
  checkpoint: null,
};

Deno.test("protocol: a leased training parses to its method's typed input, defaults filled", () => {
  const job = LeasedJob.parse({
    ...ENVELOPE,
    kind: "training",
    method: "custom_diffusion",
    input: { images: ["file_1", "file_zip/a.png"], steps: 250, destination: "cat" },
  });
  assert(job.kind === "training" && job.method === "custom_diffusion");
  // Narrowed by kind and method: the compiler knows Custom Diffusion's fields.
  const cd: LeasedTraining<"custom_diffusion"> = job;
  assertEquals(
    [cd.input.images, cd.input.modifier_token, cd.input.batch_size, cd.input.captions, cd.input.steps],
    [["file_1", "file_zip/a.png"], "<new1>", 2, {}, 250],
  );
  const db = LeasedJob.parse({
    ...ENVELOPE,
    kind: "training",
    method: "dreambooth",
    input: { images: ["f"] },
  });
  assert(db.kind === "training" && db.method === "dreambooth");
  assertEquals([db.input.steps, db.input.token, db.input.mode], [500, "sks", "lora"]);
});

Deno.test("protocol: what a method's schema refuses fails the parse by field; unknown methods by name", () => {
  const cd = LeasedJob.safeParse({
    ...ENVELOPE,
    kind: "training",
    method: "custom_diffusion",
    input: { images: ["f"] }, // the edge resolves Custom Diffusion's steps before it queues
  });
  assertEquals(cd.error?.issues.map((i) => i.path.join(".")), ["input.steps"]);
  const unknown = LeasedJob.safeParse({ ...ENVELOPE, kind: "training", method: "lora", input: {} });
  assertEquals(unknown.error?.issues.map((i) => i.path.join(".")), ["method"]);
  // The envelope alone still reads, so such a job can be failed by its lease.
  assertEquals(LeaseEnvelope.parse({ ...ENVELOPE, kind: "training", method: "lora", input: {} }).id, "t_1");
});

Deno.test("protocol: predictions and merges lease typed inputs too", () => {
  const p = LeasedJob.parse({
    ...ENVELOPE,
    kind: "prediction",
    input: { prompt: "a sks dog", adapters: [{ id: "adp_1", token: "sks", scale: 0.5 }] },
  });
  assert(p.kind === "prediction");
  assertEquals([p.input.steps, p.input.adapters[0].scale, p.input.region_adapters], [20, 0.5, []]);
  const m = LeasedJob.parse({
    ...ENVELOPE,
    kind: "merge",
    method: "custom_diffusion",
    input: { method: "custom_diffusion", adapters: [{ id: "a" }, { id: "b", weight: 1 }] },
  });
  assert(m.kind === "merge");
  assertEquals(m.input.adapters.map((a) => a.weight), [1, 1]);
});

Deno.test("protocol: registration says what a worker serves; a completion describes its adapter", () => {
  const r = RegisterRequest.parse({
    name: "w",
    models: ["tiny-shapes"],
    kinds: ["training"],
    executionProvider: "cpu",
    methods: ["dreambooth"],
  });
  assertEquals([r.methods, r.merges, r.features], [["dreambooth"], [], []]);
  assertEquals(
    RegisterRequest.safeParse({ ...r, features: ["telepathy"] }).error?.issues[0].path,
    ["features", 0],
  );
  const done = CompleteRequest.parse({
    workerId: "w",
    leaseId: "l",
    outputs: [],
    adapter: { kind: "concept", method: "dreambooth", tokens: ["sks"], class_word: null },
  });
  assertEquals(done.adapter?.full_model, false);
});
