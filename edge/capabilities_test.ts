import { assert, assertEquals } from "../gpu-worker/testing.ts";
import { type TestEdge, testEdge, testPng, TestWorker, uploadForm } from "./testing.ts";

async function ledger(t: TestEdge) {
  return (await (await t.req("/v1/usage")).json()).data;
}
async function image(t: TestEdge): Promise<string> {
  const res = await t.req("/v1/files", { method: "POST", body: uploadForm(testPng(), "a.png") });
  return (await res.json()).id;
}
const training = (method: string, input: Record<string, unknown>) => ({
  method,
  base_model: "tiny-shapes",
  destination: "x",
  input,
});

Deno.test("501: a training method no registered worker runs is refused before any credit is reserved", async () => {
  const t = await testEdge();
  const img = await image(t);
  // The embedded worker's registration: DreamBooth and Custom Diffusion, not CIDM.
  await t.worker.register(["tiny-shapes"], ["prediction", "training", "merge"], {
    methods: ["dreambooth", "custom_diffusion"],
    merges: ["custom_diffusion"],
    features: ["img2img"],
  });
  const before = await ledger(t);
  const res = await t.json("/v1/trainings", training("cidm", { images: [img], library: "pets" }));
  assertEquals(res.status, 501);
  assertEquals(res.headers.get("content-type"), "application/problem+json");
  const p = await res.json();
  assertEquals([p.type, p.status, p.title], ["/docs#problem-not-implemented", 501, "Not Implemented"]);
  assert(p.detail.includes(`"cidm"`) && p.detail.includes("dreambooth, custom_diffusion"), p.detail);
  assertEquals(await ledger(t), before, "no ledger entry");
  assertEquals((await (await t.req("/v1/trainings")).json()).data, [], "no job");

  const ok = await t.json("/v1/trainings", training("dreambooth", { images: [img], steps: 2 }));
  assertEquals(ok.status, 201, "a method it runs is accepted");
  const merge = await t.json("/v1/merges", {
    method: "linear",
    adapters: ["adp_a", "adp_b"],
    destination: "m",
  });
  assertEquals(merge.status, 422, "unknown adapters come first (the base model is theirs)");
});

Deno.test("501: a prediction feature no registered worker for the model serves names the feature and its field", async () => {
  const t = await testEdge();
  await t.worker.register(["tiny-shapes"], ["prediction"], { features: ["img2img"] });
  const other = new TestWorker(t);
  await other.register(["sd15"], ["prediction"]); // serves everything, but another base model
  const before = await ledger(t);
  const res = await t.json("/v1/predictions", {
    base_model: "tiny-shapes",
    input: {
      prompt: "x",
      sliders: [{ id: "adp_s", scale: 1 }],
      regions: [{ box: [0, 0, 1, 1], prompt: "y" }],
    },
  });
  assertEquals(res.status, 501);
  const p = await res.json();
  assert(p.detail.includes(`"sliders" (input.sliders), "regions" (input.regions)`), p.detail);
  assert(p.detail.includes("they serve: img2img"), p.detail);
  assertEquals(await ledger(t), before, "no ledger entry");
  const plain = await t.json("/v1/predictions", {
    base_model: "tiny-shapes",
    input: { prompt: "x", steps: 2 },
  });
  assertEquals(plain.status, 202, "plain txt2img needs no feature");
});

Deno.test("no worker registered for the model: the job is accepted and waits for one", async () => {
  const t = await testEdge({}, { a: 100_000, b: 0 });
  const img = await image(t);
  const other = new TestWorker(t);
  await other.register(["tiny-shapes"], ["prediction"], { features: [] }); // no trainings here
  const res = await t.json(
    "/v1/trainings",
    training("concept_slider", { positive: "old", negative: "young" }),
  );
  assertEquals(res.status, 201, await res.clone().text());
  const slider = await res.json();
  assertEquals(slider.cost, 1000 * 1 * 6);
  const cidm = await t.json("/v1/trainings", training("cidm", { images: [img], library: "pets" }));
  assertEquals(cidm.status, 201);
  // A worker that runs the method joins later and leases it, its input typed by the method's schema.
  await t.worker.register(["tiny-shapes"], ["training"], { methods: ["concept_slider"] });
  const job = (await t.worker.lease())!;
  assertEquals([job.id, job.method], [slider.id, "concept_slider"]);
  assertEquals((job.input as { train_method: string }).train_method, "noxattn");
  // ... and from now on a method none of the registered trainers runs is refused.
  const again = await t.json("/v1/trainings", training("cidm", { images: [img], library: "pets" }));
  assertEquals(again.status, 501);
});

Deno.test("GET /v1/models lists what the workers registered for each model serve", async () => {
  const t = await testEdge();
  const models = async () =>
    (await (await t.req("/v1/models")).json()).data as { id: string; capabilities: string[] }[];
  const before = (await models()).find((m) => m.id === "tiny-shapes")!;
  assertEquals(
    before.capabilities,
    ["txt2img", "img2img"],
    "the folder's defaults before any worker registers",
  );
  await t.worker.register(["tiny-shapes"], ["prediction", "training"], {
    methods: ["dreambooth"],
    features: ["img2img", "regions"],
  });
  const after = (await models()).find((m) => m.id === "tiny-shapes")!;
  assertEquals(after.capabilities, ["txt2img", "img2img", "regions", "training:dreambooth"]);
});
