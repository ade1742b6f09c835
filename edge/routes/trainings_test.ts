import { zipSync } from "fflate";
import { assert, assertEquals } from "../../gpu-worker/testing.ts";
import { readSafetensors, writeSafetensors } from "../../gpu-worker/models/safetensors.ts";
import {
  TRAINING_METHOD_REGISTRY,
  TRAINING_METHODS,
  type TrainingMethod,
  withDefaultSteps,
} from "../../shared/methods.ts";
import { trainingPrice } from "../pricing.ts";
import type { AdapterRecord } from "../records.ts";
import { type TestEdge, testEdge, testPng, uploadForm } from "../testing.ts";

const LORA = writeSafetensors({
  "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight": {
    dtype: "F32",
    shape: [4, 8],
    data: new Float32Array(32).fill(0.5),
  },
  "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight": {
    dtype: "F32",
    shape: [8, 4],
    data: new Float32Array(32),
  },
}, { format: "pt", lora_rank: "4", lora_alpha: "4" });

async function upload(t: TestEdge, bytes: Uint8Array, name: string, key = t.keyA): Promise<string> {
  const res = await t.req("/v1/files", { method: "POST", body: uploadForm(bytes, name) }, key);
  assertEquals(res.status, 201, await res.clone().text());
  return (await res.json()).id;
}

async function trainRex(t: TestEdge) {
  const zip = await upload(
    t,
    zipSync({
      "1.png": testPng(8, 8, 1),
      "1.txt": new TextEncoder().encode("a sks dog"),
      "2.png": testPng(8, 8, 2),
    }),
    "rex.zip",
  );
  const res = await t.json("/v1/trainings", {
    method: "dreambooth",
    base_model: "tiny-shapes",
    destination: "rex",
    input: { images: zip, class_word: "dog", steps: 20 },
  });
  assertEquals(res.status, 201, await res.clone().text());
  return { zip, training: await res.json() };
}

Deno.test("training: zip entries reach the worker as blobs with captions; success makes the adapter", async () => {
  const t = await testEdge();
  await t.worker.register(["tiny-shapes"], ["training"]);
  const { zip, training } = await trainRex(t);
  assertEquals(
    [training.status, training.method, training.cost, training.input.steps, training.input.token],
    ["starting", "dreambooth", 200, 20, "sks"],
  );
  const job = (await t.worker.lease())!;
  const input = job.input as {
    images: string[];
    captions: Record<string, string>;
    token: string;
    mode: string;
  };
  assertEquals(input.images, [`${zip}/1.png`, `${zip}/2.png`]);
  assertEquals(input.captions, { [`${zip}/1.png`]: "a sks dog" });
  assertEquals([input.token, input.mode, job.method], ["sks", "lora", "dreambooth"]);
  const blobs = job.blobs as Record<string, { sha256: string }>;
  const blob = await t.worker.call(`/blobs/${blobs[`${zip}/1.png`].sha256}`, undefined, "GET");
  assertEquals(new Uint8Array(await blob.arrayBuffer()).subarray(1, 4), new TextEncoder().encode("PNG"));

  const notAdapter = await t.worker.complete(job, [{
    bytes: testPng(),
    contentType: "image/png",
    name: "x.png",
  }]);
  assertEquals(notAdapter.status, 400);
  assertEquals(
    (await t.worker.complete(job, [{
      bytes: LORA,
      contentType: "application/octet-stream",
      name: "pytorch_lora_weights.safetensors",
    }], { tokens: ["sks"], class_word: "dog" })).status,
    204,
  );
  const done = await (await t.req(`/v1/trainings/${training.id}`)).json();
  assertEquals(done.status, "succeeded");
  const adapterId = done.output.adapter;
  assert(done.output.weights.endsWith(`/v1/adapters/${adapterId}/weights`));
  const adapter = await (await t.req(`/v1/adapters/${adapterId}`)).json();
  assertEquals([
    adapter.name,
    adapter.kind,
    adapter.method,
    adapter.token,
    adapter.class_word,
    adapter.triggers,
  ], ["rex", "concept", "dreambooth", "sks", "dog", ["<rex>", "sks"]]);
  assertEquals(adapter.source, { kind: "training", id: training.id });
  assertEquals(await balance(t), 9_800);

  const weights = new Uint8Array(await (await t.req(`/v1/adapters/${adapterId}/weights`)).arrayBuffer());
  assertEquals(weights, LORA);
  const kohya = readSafetensors(
    new Uint8Array(await (await t.req(`/v1/adapters/${adapterId}/weights?format=kohya`)).arrayBuffer()),
  );
  const k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q";
  assertEquals(kohya.names().sort(), [`${k}.alpha`, `${k}.lora_down.weight`, `${k}.lora_up.weight`]);
  assertEquals(Array.from(kohya.float32(`${k}.alpha`)), [4]);
  const peft = readSafetensors(
    new Uint8Array(await (await t.req(`/v1/adapters/${adapterId}/weights?format=peft`)).arrayBuffer()),
  );
  assert(peft.names().every((n) => n.startsWith("base_model.model.down_blocks.0.")), peft.names().join());
  assertEquals((await t.req(`/v1/adapters/${adapterId}/weights?format=onnx`)).status, 422);

  // The new adapter is routed by <rex> in a prediction.
  const p =
    await (await t.json("/v1/predictions", { base_model: "tiny-shapes", input: { prompt: "<rex> running" } }))
      .json();
  assertEquals(p.adapters, [{ id: adapterId, scale: 1, routed: true }]);
});

async function balance(t: TestEdge) {
  return (await (await t.req("/v1/account")).json()).balance;
}

Deno.test("trainings and adapters are tenant-scoped: another tenant gets 404 everywhere", async () => {
  const t = await testEdge();
  await t.worker.register();
  const { zip, training } = await trainRex(t);
  const job = (await t.worker.lease())!;
  await t.worker.complete(job, [{
    bytes: LORA,
    contentType: "application/octet-stream",
    name: "a.safetensors",
  }]);
  const adapterId = (await (await t.req(`/v1/trainings/${training.id}`)).json()).output.adapter;
  const routes: [string, string][] = [
    [`/v1/trainings/${training.id}`, "GET"],
    [`/v1/trainings/${training.id}/cancel`, "POST"],
    [`/v1/trainings/${training.id}/stream`, "GET"],
    [`/v1/adapters/${adapterId}`, "GET"],
    [`/v1/adapters/${adapterId}/weights`, "GET"],
    [`/v1/adapters/${adapterId}`, "DELETE"],
    [`/v1/files/${zip}`, "GET"],
  ];
  for (const [path, method] of routes) {
    const res = await t.req(path, { method }, t.keyB);
    assertEquals(res.status, 404, `${method} ${path}`);
    await res.body?.cancel();
  }
  assertEquals((await (await t.req("/v1/adapters", {}, t.keyB)).json()).data, []);
  const bobs = await t.json("/v1/trainings", {
    method: "dreambooth",
    base_model: "tiny-shapes",
    destination: "x",
    input: { images: [zip] },
  }, t.keyB);
  assertEquals([bobs.status, (await bobs.json()).invalid_fields[0].name], [422, "input.images.0"]);
  const merge = await t.json("/v1/merges", {
    method: "linear",
    adapters: [adapterId, adapterId],
    destination: "m",
  }, t.keyB);
  assertEquals(merge.status, 422);
  assertEquals((await t.req(`/v1/adapters/${adapterId}`, { method: "DELETE" })).status, 204);
  assertEquals((await t.req(`/v1/adapters/${adapterId}`)).status, 404);
});

Deno.test("training input: method fields validated by name, defaults from METHODS.md", async () => {
  const t = await testEdge();
  const img = await upload(t, testPng(), "a.png");
  const res = await t.json("/v1/trainings", {
    method: "custom_diffusion",
    base_model: "tiny-shapes",
    destination: "cat",
    input: { images: [img], token: "x", steps: 0 },
  });
  assertEquals(res.status, 422);
  assertEquals((await res.json()).invalid_fields.map((f: { name: string }) => f.name).sort(), [
    "input.steps",
    "input.token",
  ]);
  const ok = await (await t.json("/v1/trainings", {
    method: "custom_diffusion",
    base_model: "tiny-shapes",
    destination: "cat",
    input: { images: [img] },
  })).json();
  assertEquals([ok.input.steps, ok.input.modifier_token, ok.input.freeze_model, ok.cost], [
    250,
    "<new1>",
    "crossattn_kv",
    250 * 2 * 8,
  ]);
  const method = await t.json("/v1/trainings", {
    method: "textual_inversion",
    base_model: "tiny-shapes",
    destination: "x",
    input: {},
  });
  assertEquals(method.status, 422);
});

Deno.test("adapters: import from an uploaded safetensors file; merges make a job", async () => {
  const t = await testEdge();
  const file = await upload(t, LORA, "style.safetensors");
  const png = await upload(t, testPng(), "a.png");
  const bad = await t.json("/v1/adapters", { file: png, base_model: "tiny-shapes", name: "style" });
  assertEquals([bad.status, (await bad.json()).invalid_fields[0].name], [422, "file"]);
  const res = await t.json("/v1/adapters", {
    file,
    base_model: "tiny-shapes",
    name: "style",
    token: "<style>",
  });
  assertEquals(res.status, 201);
  const a = await res.json();
  assertEquals([a.kind, a.method, a.source.kind, a.triggers], ["concept", "lora", "import", ["<style>"]]);
  const b = await (await t.json("/v1/adapters", { file, base_model: "tiny-shapes", name: "style2" })).json();
  await t.worker.register(["tiny-shapes"], ["merge"]);
  const merge = await t.json("/v1/merges", {
    method: "linear",
    adapters: [a.id, { id: b.id, weight: 0.5 }],
    destination: "both",
  });
  assertEquals(merge.status, 201);
  const m = await merge.json();
  assertEquals([m.cost, m.base_model], [50, "tiny-shapes"]);
  const job = (await t.worker.lease())!;
  assertEquals(
    (job.input as { adapters: { id: string; weight: number }[] }).adapters.map((x) => [x.id, x.weight]),
    [[a.id, 1], [b.id, 0.5]],
  );
  await t.worker.complete(job, [{
    bytes: LORA,
    contentType: "application/octet-stream",
    name: "merged.safetensors",
  }]);
  const merged =
    await (await t.req(`/v1/adapters/${(await (await t.req(`/v1/merges/${m.id}`)).json()).output.adapter}`))
      .json();
  assertEquals([merged.name, merged.method, merged.source.kind], ["both", "merge:linear", "merge"]);
});

Deno.test("pricing: each method's cost is its registry entry's default steps x batch x price per step", async () => {
  const t = await testEdge({}, { a: 1_000_000, b: 0 });
  const img = await upload(t, testPng(), "a.png");
  const inputs: Record<TrainingMethod, Record<string, unknown>> = {
    dreambooth: { images: [img] },
    custom_diffusion: { images: [img] },
    concept_slider: { positive: "very old", negative: "very young" },
    cidm: { images: [img], library: "pets" },
  };
  for (const method of TRAINING_METHODS) {
    const res = await t.json("/v1/trainings", {
      method,
      base_model: "tiny-shapes",
      destination: `x-${method}`,
      input: inputs[method],
    });
    assertEquals(res.status, 201, await res.clone().text());
    const job = await res.json();
    const entry = TRAINING_METHOD_REGISTRY[method];
    const parsed = entry.input.parse(inputs[method]) as Record<string, unknown>;
    const steps = withDefaultSteps(method, parsed as never).steps;
    assertEquals(job.input.steps, steps, `${method}: the default steps are shown in the input`);
    assertEquals(job.cost, steps * (parsed.batch_size as number) * entry.prices.per_step, method);
    assertEquals(job.cost, trainingPrice(method, parsed as never), method);
  }
  const full = await (await t.json("/v1/trainings", {
    method: "dreambooth",
    base_model: "tiny-shapes",
    destination: "full",
    input: { images: [img], mode: "full", steps: 10 },
  })).json();
  assertEquals(full.cost, 10 * TRAINING_METHOD_REGISTRY.dreambooth.prices.per_step_full);
  const account = await (await t.req("/v1/account")).json();
  assertEquals(account.prices.training.per_step, {
    dreambooth: 10,
    dreambooth_full: 40,
    custom_diffusion: 8,
    concept_slider: 6,
    cidm: 10,
  });
});

Deno.test("a completed training's adapter record is the worker's descriptor, not a guess from the request", async () => {
  const t = await testEdge();
  await t.worker.register(["tiny-shapes"], ["training"]);
  const a = await upload(t, testPng(8, 8, 1), "a.png");
  const b = await upload(t, testPng(8, 8, 2), "b.png");
  const res = await t.json("/v1/trainings", {
    method: "custom_diffusion",
    base_model: "tiny-shapes",
    destination: "pair",
    input: {
      steps: 5,
      concepts: [
        { images: [a], modifier_token: "<a1>", class_word: "cat" },
        { images: [b], modifier_token: "<b1>", class_word: "dog" },
      ],
    },
  });
  assertEquals(res.status, 201);
  const training = await res.json();
  const job = (await t.worker.lease())!;
  const output = [{
    bytes: LORA,
    contentType: "application/octet-stream",
    name: "custom_diffusion.safetensors",
  }];
  const none = await t.worker.call(`/jobs/${job.id}/complete`, {
    workerId: t.worker.workerId,
    leaseId: job.leaseId,
    outputs: [{
      blob: await t.worker.putBlob(LORA),
      contentType: "application/octet-stream",
      name: "a.safetensors",
    }],
  });
  assertEquals([none.status, (await none.json()).type], [400, "/docs#problem-invalid-adapter-descriptor"]);
  const wrong = await t.worker.complete(job, output, { method: "dreambooth" });
  assertEquals(wrong.status, 400, "another method than the job's");
  const done = await t.worker.complete(job, output, { tokens: ["<a1>", "<b1>"], class_word: "cat" });
  assertEquals(done.status, 204);
  const id = (await (await t.req(`/v1/trainings/${training.id}`)).json()).output.adapter;
  const adapter = await (await t.req(`/v1/adapters/${id}`)).json();
  assertEquals(
    [adapter.kind, adapter.method, adapter.token, adapter.class_word, adapter.full_model, adapter.triggers],
    ["concept", "custom_diffusion", "<a1>", "cat", false, ["<pair>", "<a1>"]],
  );
  const rec = await t.edge.metadata.get<AdapterRecord>(["adapters", t.tenantA, id]);
  assertEquals(rec!.tokens, ["<a1>", "<b1>"]);
});
