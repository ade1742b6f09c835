/**
 * Prompt-Free Diffusion's pieces with a small randomly-initialised SeeCoder in a copy of the tiny model's
 * folder: the folder layout (official names, buffers, prefix-free files, the PA check), the encoder's shapes
 * and determinism, the pipeline's reference-image path (zeros unconditional, CFG 2.0 default, seeded), the
 * worker's advertisement of `reference_image`, the variation pairs, and the trainer's gradients against
 * finite differences.
 */
import { assert, assertEquals, assertRejects } from "../testing.ts";
import { EngineRunner } from "../ort/runner.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { ModelContext } from "../models/layers.ts";
import { WeightSource } from "../models/weights.ts";
import { buildSeeCoder, parseSeeCoderConfig, SEECODER_PREFIX } from "../models/seecoder.ts";
import { loadSafetensors, writeSafetensors } from "../models/safetensors.ts";
import { loadModelFolder } from "../models/model_folder.ts";
import { StableDiffusionPipeline } from "../pipelines/stable_diffusion.ts";
import { randomLora, TINY_MODEL } from "../pipelines/testing.ts";
import { renderScene } from "../shapesworld/render.ts";
import { captionOf, sampleScene } from "../shapesworld/world.ts";
import { Rng } from "../random.ts";
import { Tensor } from "../tensor.ts";
import { JobInputError } from "../input_error.ts";
import { modelsServeReferenceImage, servedCapabilities } from "../jobs/served.ts";
import { hasSeeCoder, loadSeeCoderFolder, relativePositionIndex, saveSeeCoderFolder } from "./folder.ts";
import { SeeCoderEncoder } from "./encoder.ts";
import { variationPair } from "./pairs.ts";
import { SeeCoderTrainer } from "./trainer.ts";
import { SeeCoderTextPretext, textTargets } from "./text_pretext.ts";

/** A small SeeCoder whose embeddings fit the tiny UNet (64 wide); 2 + 6 queries. */
const CONFIG = {
  imencoder: { embed_dim: 8, depths: [2, 2, 2, 2], num_heads: [1, 1, 2, 2], window_size: 2 },
  imdecoder: {
    inchannels: { res3: 16, res4: 32, res5: 64 },
    trans_dim: 32,
    trans_nheads: 2,
    trans_feedforward_dim: 32,
    trans_num_layers: 1,
  },
  qtransformer: {
    in_channels: 32,
    hidden_dim: 64,
    num_queries: [2, 6],
    nheads: 4,
    num_layers: 3,
    feedforward_dim: 64,
  },
};

/** Seeded random SeeCoder tensors by their official names. */
function randomTensors(seed: number) {
  const cfg = parseSeeCoderConfig(CONFIG);
  const src = WeightSource.random(seed);
  buildSeeCoder(new ModelContext(new GraphBuilder("init"), src), cfg, {});
  return { cfg, tensors: [...src.produced].map(([name, t]) => ({ name, ...t })) };
}

/** A copy of the tiny model's folder (without its own SeeCoder) plus a random SeeCoder. */
async function modelWithSeeCoder(seed = 3, withSeeCoder = true): Promise<string> {
  const root = await Deno.makeTempDir({ prefix: "seecoder-test-" });
  const dir = `${root}/tiny-shapes`;
  await Deno.mkdir(dir);
  for (const part of ["unet", "vae", "text_encoder", "tokenizer", "scheduler"]) {
    await Deno.mkdir(`${dir}/${part}`);
    for await (const e of Deno.readDir(`${TINY_MODEL}/${part}`)) {
      if (e.isFile) await Deno.copyFile(`${TINY_MODEL}/${part}/${e.name}`, `${dir}/${part}/${e.name}`);
    }
  }
  await Deno.copyFile(`${TINY_MODEL}/model_index.json`, `${dir}/model_index.json`);
  if (withSeeCoder) {
    const { cfg, tensors } = randomTensors(seed);
    await saveSeeCoderFolder(dir, CONFIG, cfg, tensors);
  }
  return dir;
}

/** Removes what `modelWithSeeCoder` made (its own temporary folder, checked by name). */
async function removeModel(dir: string) {
  const root = dir.slice(0, dir.lastIndexOf("/"));
  assert(/\/seecoder-test-[^/]+$/.test(root), `not a test folder: ${root}`);
  await Deno.remove(root, { recursive: true });
}

function scene(seed: number) {
  return renderScene(sampleScene(new Rng(seed), { objectCount: 1, sizes: ["large"] }), 64);
}

Deno.test("SeeCoder folder: official names with the relative_position_index buffers; prefix-free files load", async () => {
  const dir = await modelWithSeeCoder();
  try {
    assert(await hasSeeCoder(dir));
    const sc = await loadSeeCoderFolder(dir);
    assertEquals([sc.prefix, sc.tokens, sc.hidden], [SEECODER_PREFIX, 8, 64]);
    const names = sc.weights.names();
    assert(names.every((n) => n.startsWith("ctx.image.")), "every name under ctx.image.");
    const buffer = "ctx.image.imencoder.layers.3.blocks.1.attn.relative_position_index";
    assertEquals([sc.weights.entry(buffer).dtype, sc.weights.entry(buffer).shape], ["I64", [4, 4]]);
    // The official index for a 2x2 window: (dh + 1) * 3 + (dw + 1).
    assertEquals([...relativePositionIndex(2)].map(Number), [4, 3, 1, 0, 5, 4, 2, 1, 7, 6, 4, 3, 8, 7, 5, 4]);
    assertEquals(names.filter((n) => n.endsWith("relative_position_index")).length, 8);
    // The same tensors without the prefix (as third-party loaders save them) give the same embeddings.
    const runner = new EngineRunner();
    try {
      const a = await SeeCoderEncoder.load(dir, runner);
      const stripped: Record<string, { dtype: "F32"; shape: number[]; data: Float32Array }> = {};
      for (const n of names) {
        if (n.endsWith("relative_position_index")) continue;
        stripped[n.slice(SEECODER_PREFIX.length)] = {
          dtype: "F32",
          shape: sc.weights.entry(n).shape,
          data: sc.weights.float32(n),
        };
      }
      await Deno.remove(`${dir}/seecoder/seecoder.safetensors`);
      await Deno.writeFile(`${dir}/seecoder/seecoder-v1-0.safetensors`, writeSafetensors(stripped));
      const b = await SeeCoderEncoder.load(dir, runner);
      assertEquals(b.folder.prefix, "");
      const img = scene(1);
      assertEquals((await b.encode([img])).f, (await a.encode([img])).f);
      // A config that claims the PA variant for plain weights is refused by name.
      await Deno.writeTextFile(
        `${dir}/seecoder/config.json`,
        JSON.stringify({ ...CONFIG, qtransformer: { ...CONFIG.qtransformer, with_fea2d_pos: true } }),
      );
      await assertRejects(() => loadSeeCoderFolder(dir), Error, "with_fea2d_pos true");
    } finally {
      runner.terminate();
    }
  } finally {
    await removeModel(dir);
  }
});

Deno.test("SeeCoder encoder: [n, tokens, hidden], deterministic, images of other sizes one by one", async () => {
  const dir = await modelWithSeeCoder();
  const runner = new EngineRunner();
  try {
    const enc = await SeeCoderEncoder.load(dir, runner);
    const a = scene(1), b = scene(2);
    const both = await enc.encode([a, b]);
    assertEquals(both.dims, [2, 8, 64]);
    const again = await enc.encode([a]);
    assertEquals(again.f, both.f.slice(0, 8 * 64), "per image, batch-independent and deterministic");
    assert(both.f.some((x, i) => x !== both.f[8 * 64 + i % (8 * 64)]), "two images, two embeddings");
    const odd = { width: 48, height: 40, rgb: new Uint8Array(48 * 40 * 3).fill(90) };
    assertEquals((await enc.encode([a, odd])).dims, [2, 8, 64]);
  } finally {
    runner.terminate();
    await removeModel(dir);
  }
});

Deno.test("reference image: SeeCoder's embeddings as the prompt, zeros unconditional, CFG 2.0, seeded", async () => {
  const dir = await modelWithSeeCoder();
  const runner = new EngineRunner();
  try {
    const pipe = await StableDiffusionPipeline.load(dir, runner, { cacheDir: `${dir}/.onnx` });
    const ref = scene(5);
    const base = { steps: 3, seed: 7 };
    const r1 = await pipe.generate({ ...base, referenceImage: ref, negativePrompt: "a blue square" });
    const r2 = await pipe.generate({ ...base, referenceImage: ref });
    assertEquals(
      r1.images[0].rgb,
      r2.images[0].rgb,
      "same seed, same image (and the negative prompt unread)",
    );
    assertEquals(r1.timings.unetEvals, 3, "guidance on: one batched CFG evaluation per step");
    const embeds = await (await pipe.referenceEncoder()).encode([ref]);
    const manual = await pipe.generate({
      ...base,
      promptEmbeds: embeds,
      negativePromptEmbeds: Tensor.zeros(embeds.dims),
      guidanceScale: 2,
    });
    assertEquals(manual.images[0].rgb, r1.images[0].rgb, "= embeddings with zeros unconditional at CFG 2.0");
    const other = await pipe.generate({ ...base, seed: 8, referenceImage: ref });
    assert(other.images[0].rgb.some((v, i) => v !== r1.images[0].rgb[i]), "another seed, another image");
    const g5 = await pipe.generate({ ...base, referenceImage: ref, guidanceScale: 5 });
    assert(g5.images[0].rgb.some((v, i) => v !== r1.images[0].rgb[i]), "an explicit guidance scale is used");
    // Adapters act with a reference as with a prompt: scale 0 is the plain variation, scale 1 another image,
    // a per-step scale (a slider's start_step) off for the whole run is the plain variation too.
    const lora = randomLora(pipe, 2);
    const off = await pipe.generate({ ...base, referenceImage: ref, adapters: [{ lora, scale: 0 }] });
    assertEquals(off.images[0].rgb, r1.images[0].rgb, "an adapter at scale 0 changes nothing");
    const on = await pipe.generate({ ...base, referenceImage: ref, adapters: [{ lora, scale: 1 }] });
    assert(on.images[0].rgb.some((v, i) => v !== r1.images[0].rgb[i]), "an adapter at scale 1 acts");
    const late = await pipe.generate({
      ...base,
      referenceImage: ref,
      adapters: [{ lora, scale: (s) => s >= 3 ? 1 : 0 }],
    });
    assertEquals(late.images[0].rgb, r1.images[0].rgb, "a per-step scale that never turns on");
    const n2 = await pipe.generate({ ...base, referenceImage: ref, n: 2 });
    assertEquals(n2.images.length, 2);
    await assertRejects(
      () => pipe.generate({ ...base, referenceImage: ref, promptEmbeds: embeds }),
      JobInputError,
      "referenceImage replaces promptEmbeds",
    );
    // Regions with the reference's context length mix with it (a text region does not: 77 tokens).
    const regional = await pipe.generate({
      ...base,
      referenceImage: ref,
      regions: [{
        box: [0, 0, 0.5, 1],
        promptEmbeds: await (await pipe.referenceEncoder()).encode([scene(6)]),
      }],
    });
    assertEquals(regional.images.length, 1);
  } finally {
    runner.terminate();
    await removeModel(dir);
  }
});

Deno.test("reference image: a model without a SeeCoder refuses it by name", async () => {
  const dir = await modelWithSeeCoder(3, false);
  const runner = new EngineRunner();
  try {
    const pipe = await StableDiffusionPipeline.load(dir, runner, { cacheDir: `${dir}/.onnx` });
    await assertRejects(
      () => pipe.generate({ steps: 1, seed: 1, referenceImage: scene(1) }),
      JobInputError,
      "has no SeeCoder",
    );
  } finally {
    runner.terminate();
    await removeModel(dir);
  }
});

Deno.test("worker: reference_image is advertised only when every served model has a SeeCoder", async () => {
  const root = (d: string) => d.slice(0, d.lastIndexOf("/"));
  const withSc = await modelWithSeeCoder();
  const without = await modelWithSeeCoder(3, false);
  try {
    assert(await modelsServeReferenceImage(root(withSc), ["tiny-shapes"]));
    assert(!(await modelsServeReferenceImage(root(without), ["tiny-shapes"])));
    assert(!(await modelsServeReferenceImage(root(withSc), [])));
    assertEquals(servedCapabilities().features, ["img2img", "inpainting", "regions", "sliders"]);
    assertEquals(servedCapabilities({ referenceImage: true }).features, [
      "img2img",
      "inpainting",
      "regions",
      "sliders",
      "reference_image",
    ]);
  } finally {
    await removeModel(withSc);
    await removeModel(without);
  }
});

Deno.test("variation pairs: same description, new geometry; seeded", () => {
  let moved = 0;
  for (let i = 0; i < 40; i++) {
    const { reference: r, target: t } = variationPair(0, i);
    assertEquals(variationPair(0, i), { reference: r, target: t });
    assertEquals(t.background, r.background);
    assertEquals(t.objects.length, r.objects.length);
    r.objects.forEach((o, k) => {
      const v = t.objects[k];
      assertEquals([v.shape, v.colour, v.size, v.texture], [o.shape, o.colour, o.size, o.texture]);
      assert(v.cx !== o.cx && v.texturePhase !== o.texturePhase, `pair ${i}: geometry redrawn`);
      if (v.position !== o.position) moved++;
    });
  }
  assert(moved > 5 && moved < 35, `about half the one-object variations move (${moved} of 40)`);
  const held = variationPair(0, 1, "heldout");
  assertEquals(held.reference.objects.length, 1);
});

Deno.test("SeeCoder trainer: gradients match finite differences (backbone, decoder, query transformer)", async () => {
  const runner = new EngineRunner();
  try {
    const folder = await loadModelFolder(TINY_MODEL);
    const { tensors } = randomTensors(11);
    const init = await (async () => {
      const dir = await Deno.makeTempDir();
      const path = `${dir}/w.safetensors`;
      const out: Record<string, { dtype: "F32"; shape: number[]; data: Float32Array }> = {};
      for (const t of tensors) out[t.name] = { dtype: "F32", shape: t.shape, data: t.data };
      await Deno.writeFile(path, writeSafetensors(out));
      const f = await loadSafetensors(path);
      await Deno.remove(dir, { recursive: true });
      return f;
    })();
    const t = await SeeCoderTrainer.create(runner, folder, CONFIG, {
      batch: 2,
      seed: 0,
      init,
      dropProbability: 0,
    });
    assertEquals(t.trainedParameterCount(), t.parameterCount() - 16, "all but the unused norm0 are trained");
    const pairs = [variationPair(0, 1), variationPair(0, 2)];
    const refs = pairs.map((p) => renderScene(p.reference, 64));
    const targets = pairs.map((p) => renderScene(p.target, 64));
    const run = () => t.computeGradients(refs, targets, new Rng(4));
    const { grads } = await run();
    const byName = new Map(t.trained.map((x) => [x.name, x]));
    const probes = [
      "ctx.image.imencoder.patch_embed.proj.weight",
      "ctx.image.imencoder.layers.1.blocks.1.attn.qkv.weight",
      "ctx.image.imdecoder.transformer.layers.0.linear1.weight",
      "ctx.image.qtransformer.transformer_crossatt_layers.1.multihead_attn.in_proj_weight",
      "ctx.image.qtransformer.init_query.weight",
    ];
    for (const name of probes) {
      const p = byName.get(name)!;
      const g = grads[name];
      // The entry with the largest gradient: central differences in float32 need a clear signal.
      let k = 0;
      for (let i = 0; i < g.length; i++) if (Math.abs(g[i]) > Math.abs(g[k])) k = i;
      const h = 1e-2, x0 = p.data[k];
      p.data[k] = x0 + h;
      const up = (await run()).loss;
      p.data[k] = x0 - h;
      const down = (await run()).loss;
      p.data[k] = x0;
      const fd = (up - down) / (2 * h);
      const rel = Math.abs(fd - g[k]) / Math.max(Math.abs(g[k]), 1e-4);
      assert(
        rel < 0.05,
        `${name}[${k}]: autodiff ${g[k].toExponential(4)}, finite difference ${fd.toExponential(4)}`,
      );
    }
    await t.release();
  } finally {
    runner.terminate();
  }
});

Deno.test("SeeCoder text pretext: targets are the text encoder's first rows; gradients match finite differences; it learns", async () => {
  const runner = new EngineRunner();
  try {
    const pipe = await StableDiffusionPipeline.load(TINY_MODEL, runner);
    const p = await SeeCoderTextPretext.create(runner, CONFIG, { batch: 2, seed: 11, size: 64 });
    assertEquals(p.tokens, 8);
    const scenes = [variationPair(0, 1).reference, variationPair(0, 2).reference];
    const captions = scenes.map((s) => captionOf(s, undefined, { omitPosition: true }));
    assert(captions.every((c) => !/ (at|on|in) the /.test(c)), captions.join(" | "));
    const cache = new Map<string, Float32Array>();
    const targets = await textTargets(pipe, captions, p.tokens, cache);
    const full = await pipe.encodePrompt([captions[1]]);
    const D = full.dims[2];
    assertEquals(targets.dims, [2, 8, D]);
    assertEquals([...targets.f.slice(8 * D)], [...full.f.slice(0, 8 * D)], "caption 1's first 8 rows");
    assertEquals(cache.size, new Set(captions).size);
    const images = scenes.map((s) => renderScene(s, 64));
    const { loss, grads } = await p.computeGradients(images, targets);
    const byName = new Map(p.trained.map((x) => [x.name, x]));
    for (
      const name of [
        "ctx.image.imencoder.patch_embed.proj.weight",
        "ctx.image.qtransformer.init_query.weight",
      ]
    ) {
      const t = byName.get(name)!, g = grads[name];
      let k = 0;
      for (let i = 0; i < g.length; i++) if (Math.abs(g[i]) > Math.abs(g[k])) k = i;
      const h = 1e-2, x0 = t.data[k];
      t.data[k] = x0 + h;
      const up = (await p.computeGradients(images, targets)).loss;
      t.data[k] = x0 - h;
      const down = (await p.computeGradients(images, targets)).loss;
      t.data[k] = x0;
      const fd = (up - down) / (2 * h);
      assert(Math.abs(fd - g[k]) / Math.max(Math.abs(g[k]), 1e-4) < 0.05, `${name}: ${g[k]} vs fd ${fd}`);
    }
    // Plain gradient steps on the one batch: the regression loss falls well below where it started.
    let last = loss;
    for (let s = 0; s < 40; s++) {
      const r = await p.computeGradients(images, targets);
      for (const t of p.trained) {
        for (let i = 0; i < t.data.length; i++) t.data[i] -= 0.05 * r.grads[t.name][i];
      }
      last = r.loss;
    }
    assert(last < 0.7 * loss, `loss ${loss} -> ${last}`);
    await p.release();
    await pipe.release();
  } finally {
    runner.terminate();
  }
});
