/**
 * Custom Diffusion mechanics on the committed tiny model (few steps; the measured effect is in
 * `custom_diffusion_effect_test.ts`): settings and defaults, what trains (attn2 K/V and the new token rows,
 * nothing else), the files written (bundle, diffusers weights, token files), the adapter applied at inference
 * exactly as a UNet holding the fine-tuned weights, compression, and resume replaying a run.
 */
import { assert, assertEquals, assertThrows } from "../testing.ts";
import { withRunner, withTemp as withTempDir } from "../ort/test_scaffold.ts";
import {
  CUSTOM_DIFFUSION_ADAPTER_FILE,
  customDiffusion,
  resolveCustomDiffusionConfig,
  trainedLayerPattern,
} from "./custom_diffusion.ts";
import {
  CUSTOM_DIFFUSION_FILE_NAME,
  decodeCustomDiffusion,
  layerWeight,
  weightsAsLora,
} from "../adapters/custom_diffusion.ts";
import { loadModelFolder } from "../models/model_folder.ts";
import {
  loadSafetensors,
  readSafetensors,
  type TensorData,
  writeSafetensors,
} from "../models/safetensors.ts";
import { StableDiffusionPipeline } from "../pipelines/stable_diffusion.ts";
import { copyFolder } from "../training/finetune.ts";
import type { TrainingImage } from "../training/data.ts";
import { renderScene } from "../shapesworld/render.ts";
import { sampleScene } from "../shapesworld/world.ts";
import { Rng } from "../random.ts";
import { compressLayer, rankForMass } from "./custom_diffusion_compress.ts";

const MODEL = new URL("../../models/tiny-shapes", import.meta.url).pathname;
const CHEAP = { class_sampling_steps: 2, num_class_images: 2 };

function images(n: number, shape: "star" | "heart", colour: "purple" | "orange"): TrainingImage[] {
  return Array.from({ length: n }, (_, i) => ({
    path: `${shape}${i}.png`,
    stem: `${shape}${i}`,
    caption: null,
    image: renderScene(
      sampleScene(new Rng(100 + i), {
        objectCount: 1,
        shapes: [shape],
        colours: [colour],
        textures: ["checkered"],
        backgrounds: ["white"],
      }),
      64,
    ),
  }));
}

const withTemp = <T>(fn: (dir: string) => Promise<T>) => withTempDir("custom_diffusion_test_", fn);

Deno.test("settings: METHODS.md defaults scaled for the tiny model; wrong tokens refused with the reason", async () => {
  const folder = await loadModelFolder(MODEL);
  const one = resolveCustomDiffusionConfig({}, [{ modifier_token: "<new1>", class_word: "star" }], folder);
  assertEquals([one.steps, one.batch_size, one.freeze_model, one.with_prior_preservation, one.model_scale], [
    250,
    2,
    "crossattn_kv",
    true,
    "tiny",
  ]);
  // scale_lr: base x batch, and x2 with regularization (the official script).
  assert(Math.abs(one.learning_rate - one.base_learning_rate * 4) < 1e-12, `lr ${one.learning_rate}`);
  assertEquals([one.concepts[0].instance_prompt, one.concepts[0].class_prompt], ["a <new1> star", "a star"]);
  const joint = resolveCustomDiffusionConfig({ with_prior_preservation: false }, [
    { modifier_token: "<new1>", class_word: "star" },
    { modifier_token: "<new2>", class_word: "heart" },
  ], folder);
  assertEquals([joint.steps, joint.learning_rate], [500, joint.base_learning_rate * 2]);
  assertThrows(
    () => resolveCustomDiffusionConfig({}, [{ modifier_token: "red", class_word: "star" }], folder),
    RangeError,
    "already a word of the base vocabulary",
  );
  assertThrows(
    () =>
      resolveCustomDiffusionConfig({ initializer_token: "qqzzx" }, [
        { modifier_token: "<new1>", class_word: "star" },
      ], folder),
    RangeError,
    "must be one token",
  );
  assertThrows(
    () =>
      resolveCustomDiffusionConfig({}, [
        { modifier_token: "<new1>", class_word: "star" },
        { modifier_token: "<new1>", class_word: "heart" },
      ], folder),
    RangeError,
    "used by two concepts",
  );
  assertThrows(
    () =>
      resolveCustomDiffusionConfig({ with_prior_preservation: true }, [
        { modifier_token: "<new1>", class_word: "" },
      ], folder),
    RangeError,
    "needs a class word",
  );
  assert(
    trainedLayerPattern("crossattn_kv").test("mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"),
  );
  assert(
    !trainedLayerPattern("crossattn_kv").test(
      "mid_block.attentions.0.transformer_blocks.0.attn1.to_k.weight",
    ),
  );
  assert(
    trainedLayerPattern("crossattn").test(
      "up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_out.0.weight",
    ),
  );
});

Deno.test("a short run trains attn2 K/V and the token row only, writes diffusers' files, applies exactly", async () => {
  await withTemp(async (dir) =>
    await withRunner(async (runner) => {
      const steps: number[] = [];
      const r = await customDiffusion(runner, {
        model: MODEL,
        out: `${dir}/out`,
        cacheDir: dir,
        concepts: [{ images: images(3, "star", "purple"), modifier_token: "<new1>", class_word: "star" }],
        // 20 steps: on the pretrained model 6 steps raised the eval loss (0.465 -> 0.504; one fixed noise draw
        // per image, so a few steps are within its noise).
        config: { steps: 20, ...CHEAP, learning_rate: 1e-3 },
        onProgress: (e) => steps.push(e.step),
      });
      assertEquals(steps, Array.from({ length: 20 }, (_, i) => i + 1));
      assert(r.losses.every(Number.isFinite));
      console.log(`eval loss ${r.evalLoss.before.toFixed(4)} -> ${r.evalLoss.after.toFixed(4)}`);
      assert(r.evalLoss.after < r.evalLoss.before, `eval loss ${r.evalLoss.before} -> ${r.evalLoss.after}`);
      assertEquals(r.classImages.generated, 2);

      const base = await loadSafetensors(`${MODEL}/unet/diffusion_pytorch_model.safetensors`);
      const kv = base.names().filter((n) => trainedLayerPattern("crossattn_kv").test(n));
      const a = decodeCustomDiffusion(await Deno.readFile(r.adapterFile), "adapter");
      assertEquals([...a.layers.keys()].sort(), kv.map((n) => n.replace(/\.weight$/, "")).sort());
      const D = 64;
      assertEquals(r.trainedParameters, kv.reduce((s, n) => s + base.float32(n).length, 0) + D);
      let changed = 0;
      for (const [path, l] of a.layers) {
        const w = layerWeight(l, base.float32(`${path}.weight`));
        if (w.some((v, i) => v !== base.float32(`${path}.weight`)[i])) changed++;
      }
      assertEquals(changed, kv.length, "every K/V layer moved");
      // The token row moved away from its initializer ("ktn").
      const folder = await loadModelFolder(MODEL);
      const table = folder.weights.text_encoder.float32("text_model.embeddings.token_embedding.weight");
      const ktn = folder.tokenizer.encode("ktn")[0];
      const init = table.subarray(ktn * D, (ktn + 1) * D);
      assertEquals(a.tokens.map((t) => t.token), ["<new1>"]);
      assert(a.tokens[0].embedding.some((v, i) => Math.abs(v - init[i]) > 1e-6), "token row trained");

      // diffusers' files: processor names, no token tensors; the token in its own file.
      const dw = readSafetensors(await Deno.readFile(`${dir}/out/${CUSTOM_DIFFUSION_FILE_NAME}`), "w");
      assertEquals(dw.names().length, kv.length);
      assert(dw.names().every((n) => /\.attn2\.processor\.to_[kv]_custom_diffusion\.weight$/.test(n)));
      const tf = readSafetensors(await Deno.readFile(`${dir}/out/<new1>.safetensors`), "t");
      assertEquals(tf.names(), ["<new1>"]);

      // Inference: the adapter as LoRA deltas on the base pipeline == a UNet holding the tuned weights.
      const tuned = `${dir}/tuned`;
      await copyFolder(MODEL, tuned, (name) => !name.startsWith("."));
      const tensors: Record<string, TensorData> = {};
      for (const n of base.names()) {
        const l = a.layers.get(n.replace(/\.weight$/, ""));
        const e = base.entry(n);
        tensors[n] = l
          ? { dtype: "F32", shape: e.shape, data: layerWeight(l, base.float32(n)) }
          : { dtype: e.dtype, shape: e.shape, data: base.bytes(n) };
      }
      await Deno.writeFile(`${tuned}/unet/diffusion_pytorch_model.safetensors`, writeSafetensors(tensors));
      const pipe = await StableDiffusionPipeline.load(MODEL, runner, { cacheDir: `${dir}/onnx` });
      const ref = await StableDiffusionPipeline.load(tuned, runner, { cacheDir: `${dir}/onnx2` });
      const lora = weightsAsLora("cat", a.layers, pipe.folder.weights.unet);
      const opts = { prompt: "a <new1> star, white background", seed: 3, steps: 4, tokens: a.tokens };
      const viaLora = await pipe.generate({ ...opts, adapters: [{ lora, scale: 1 }] });
      const viaWeights = await ref.generate(opts);
      let maxDiff = 0;
      viaLora.images[0].rgb.forEach((v, i) =>
        maxDiff = Math.max(maxDiff, Math.abs(v - viaWeights.images[0].rgb[i]))
      );
      assert(maxDiff <= 2, `LoRA view vs tuned weights: max pixel difference ${maxDiff}`);
      const plain = await pipe.generate(opts);
      let moved = 0;
      plain.images[0].rgb.forEach((v, i) => moved = Math.max(moved, Math.abs(v - viaLora.images[0].rgb[i])));
      assert(moved > 2, "the adapter changes the image");
      await pipe.release();
      await ref.release();
    })
  );
});

Deno.test("compression keeps the top singular directions and reports the bytes saved; resume replays", async () => {
  await withTemp(async (dir) =>
    await withRunner(async (runner) => {
      const common = {
        model: MODEL,
        cacheDir: dir,
        concepts: [{ images: images(2, "heart", "orange"), modifier_token: "<cat>", class_word: "heart" }],
      };
      const full = await customDiffusion(runner, {
        ...common,
        out: `${dir}/full`,
        config: { steps: 4, ...CHEAP, compress: 0.6, learning_rate: 1e-3 },
        checkpointEvery: 2,
      });
      assert(
        full.size.stored < 0.5 * full.size.full,
        `stored ${full.size.stored} of ${full.size.full} bytes`,
      );
      const a = decodeCustomDiffusion(await Deno.readFile(full.adapterFile), "a");
      const base = await loadSafetensors(`${MODEL}/unet/diffusion_pytorch_model.safetensors`);
      const tuned = await loadSafetensors(`${dir}/full/${CUSTOM_DIFFUSION_FILE_NAME}`);
      for (const [path, l] of a.layers) {
        assertEquals(l.kind, "delta");
        if (l.kind !== "delta") continue;
        // The rank is the smallest holding 60% of the delta's singular value mass ...
        const w0 = base.float32(`${path}.weight`);
        const key = path.replace(/\.(to_[kv])$/, ".processor.$1_custom_diffusion") + ".weight";
        const approx = tuned.float32(key);
        assert(approx.some((v, i) => v !== w0[i]), path);
        // ... stored as factors whose product is the split file's change from the base.
        const w = layerWeight(l, w0);
        assert(w.every((v, i) => Math.abs(v - approx[i]) < 1e-6), path);
        assert(l.rank < Math.min(l.out, l.in), `${path}: rank ${l.rank}`);
      }
      // Resume from the step-2 checkpoint: the last two losses replay exactly.
      await Deno.remove(`${dir}/full/checkpoints/checkpoint-4.safetensors`);
      const resumed = await customDiffusion(runner, {
        ...common,
        out: `${dir}/full`,
        config: { steps: 4, ...CHEAP, compress: 0.6, learning_rate: 1e-3 },
        checkpointEvery: 2,
        resume: true,
      });
      assertEquals(resumed.resumedFrom, 2);
      assertEquals(resumed.losses.slice(-2), full.losses.slice(-2));
      assert(full.outputs.some((p) => p.endsWith(CUSTOM_DIFFUSION_ADAPTER_FILE)));
    })
  );
});

Deno.test("compressLayer: the rank holds the asked share of singular value mass; the factors are the best fit", () => {
  // A 24x16 change with singular values 8, 4, 2, 1, 0.5, ... (known by construction from orthonormal bases).
  const out = 24, inF = 16, rng = new Rng(4);
  const orth = (n: number, k: number) => {
    const q: Float64Array[] = [];
    while (q.length < k) {
      const v = Float64Array.from(rng.normal(n));
      for (const u of q) {
        const d = v.reduce((s, x, i) => s + x * u[i], 0);
        v.forEach((_, i) => v[i] -= d * u[i]);
      }
      const nrm = Math.hypot(...v);
      q.push(v.map((x) => x / nrm));
    }
    return q;
  };
  const U = orth(out, inF), V = orth(inF, inF);
  const s = Array.from({ length: inF }, (_, k) => 8 / 2 ** k);
  const base = Float32Array.from(rng.normal(out * inF));
  const tuned = Float32Array.from(base);
  for (let k = 0; k < inF; k++) {
    for (let r = 0; r < out; r++) {
      for (let c = 0; c < inF; c++) tuned[r * inF + c] += s[k] * U[k][r] * V[k][c];
    }
  }
  const total = s.reduce((a, b) => a + b, 0);
  assertEquals(rankForMass(s, 0.6), 2); // 8 + 4 = 12 of ~16
  assertEquals(rankForMass(s, 12 / total), 2);
  assertEquals(rankForMass(s, 12.01 / total), 3);
  assertEquals(rankForMass(s, 1), inF);
  const l = compressLayer(tuned, base, out, inF, 0.6);
  assertEquals(l.rank, 2);
  // Eckart-Young: the error is exactly the dropped singular values' norm.
  const w = layerWeight(l, base);
  let err = 0;
  w.forEach((v, i) => err += (v - tuned[i]) ** 2);
  const dropped = Math.hypot(...s.slice(2));
  assert(Math.abs(Math.sqrt(err) - dropped) < 1e-4 * dropped, `error ${Math.sqrt(err)} vs ${dropped}`);
  assertThrows(() => rankForMass(s, 0), RangeError, "(0, 1]");
  assertThrows(() => compressLayer(tuned, base, out, inF + 1, 0.6), RangeError, "[24, 17]");
});
