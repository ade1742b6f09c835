/**
 * DreamBooth mechanics on the committed tiny model (few steps; the measured effect is in
 * `dreambooth_effect_test.ts`): settings and defaults, the class-image cache (generated, cached, topped up,
 * deterministic), batches mixing instance and class examples with prior_loss_weight, LoRA and full runs that
 * write their outputs, the LoRA applied at inference with a scale, and resume replaying a run exactly.
 */
import { assert, assertEquals, assertRejects, assertThrows } from "../testing.ts";
import type { EngineRunner } from "../ort/runner.ts";
import { withRunner, withTemp as withTempDir } from "../ort/test_scaffold.ts";
import {
  dreamBooth,
  DREAMBOOTH_SCALE_DEFAULTS,
  DreamBoothConfig,
  type DreamBoothOptions,
  loadDreamBoothLora,
  priorPreservationBatch,
  resolveDreamBoothConfig,
} from "./dreambooth.ts";
import { ClassImageCache, classImageName } from "./class_images.ts";
import { DreamboothInput } from "../../shared/training.ts";
import { DiffusionTrainer, type TrainingExample } from "../training/diffusion_trainer.ts";
import { LORA_FILE_NAME } from "../adapters/lora.ts";
import { StableDiffusionPipeline } from "../pipelines/stable_diffusion.ts";
import { loadSafetensors, readSafetensors } from "../models/safetensors.ts";
import { listCheckpoints } from "../training/checkpoint.ts";
import type { TrainingImage } from "../training/data.ts";
import { renderScene } from "../shapesworld/render.ts";
import { sampleScene } from "../shapesworld/world.ts";
import { Rng } from "../random.ts";

const MODEL = new URL("../../models/tiny-shapes", import.meta.url).pathname;
const TINY = { unetParameters: 2e6, resolution: 64 };
/** Class images sampled in 2 steps: the mechanics, not their looks, are under test. */
const CHEAP_CLASS = { class_sampling_steps: 2, class_guidance_scale: 5 };

function subject(n: number): TrainingImage[] {
  return Array.from({ length: n }, (_, i) => ({
    path: `star${i}.png`,
    stem: `star${i}`,
    caption: null,
    image: renderScene(
      sampleScene(new Rng(i), {
        objectCount: 1,
        shapes: ["star"],
        colours: ["purple"],
        textures: ["checkered"],
        backgrounds: ["white"],
      }),
      64,
    ),
  }));
}

const withTemp = <T>(fn: (dir: string) => Promise<T>) => withTempDir("dreambooth_test_", fn);

Deno.test("settings: METHODS.md defaults, scaled for the tiny model, prior preservation on with a class word", () => {
  const tiny = resolveDreamBoothConfig({ class_word: "star" }, TINY);
  assertEquals(
    [tiny.token, tiny.mode, tiny.steps, tiny.rank, tiny.alpha, tiny.num_class_images, tiny.prior_loss_weight],
    ["sks", "lora", 500, 4, 4, 100, 1],
  );
  assertEquals([tiny.instance_prompt, tiny.class_prompt, tiny.with_prior_preservation], [
    "a sks star",
    "a star",
    true,
  ]);
  assertEquals([tiny.model_scale, tiny.learning_rate, tiny.class_sampling_steps], ["tiny", 1e-3, 20]);
  assertEquals(resolveDreamBoothConfig({ class_word: "star", mode: "full" }, TINY).learning_rate, 1e-4);

  const sd = { unetParameters: 860e6, resolution: 512 };
  const big = resolveDreamBoothConfig({ class_word: "dog", mode: "full" }, sd);
  assertEquals([big.model_scale, big.learning_rate, big.class_sampling_steps, big.class_guidance_scale], [
    "sd",
    DREAMBOOTH_SCALE_DEFAULTS.sd.fullLearningRate,
    50,
    7.5,
  ]);
  assertEquals(resolveDreamBoothConfig({ class_word: "dog" }, sd).learning_rate, 1e-4);

  const noClass = resolveDreamBoothConfig({}, TINY);
  assertEquals([noClass.with_prior_preservation, noClass.instance_prompt], [false, "a sks"]);
  assertThrows(
    () => resolveDreamBoothConfig({ with_prior_preservation: true }, TINY),
    RangeError,
    "with_prior_preservation needs class_word",
  );
  assertThrows(() => resolveDreamBoothConfig({ resolution: 512 }, TINY), RangeError, "trains at 64");
  assertThrows(() => resolveDreamBoothConfig({ rnak: 4 } as never, TINY), Error, "rnak");
});

Deno.test("the method's defaults agree with the API's dreambooth input", () => {
  const api = DreamboothInput.parse({ images: ["file_1"] }) as Record<string, unknown>;
  const method = DreamBoothConfig.parse({}) as Record<string, unknown>;
  const shared = Object.keys(api).filter((k) => k in DreamBoothConfig.shape);
  assert(shared.length >= 8, `fields in both: ${shared}`);
  for (const k of shared) assertEquals(method[k], api[k], k);
  // Both leave prior preservation unset, so the method turns it on exactly when a class word is given.
  assertEquals([api.with_prior_preservation, method.with_prior_preservation], [undefined, undefined]);
});

Deno.test("a micro-batch is its instance half then its class half, weighted 2 and 2 x prior_loss_weight", () => {
  assertEquals(priorPreservationBatch([7, 1], 5, 100, 0.5), [
    { kind: "instance", index: 2, weight: 2 },
    { kind: "instance", index: 1, weight: 2 },
    { kind: "class", index: 7, weight: 1 },
    { kind: "class", index: 1, weight: 1 },
  ]);
  assertEquals(priorPreservationBatch([103], 4, 100, 1), [
    { kind: "instance", index: 3, weight: 2 },
    { kind: "class", index: 3, weight: 2 },
  ]);
  assertEquals(priorPreservationBatch([6], 4, 0, 1), [{ kind: "instance", index: 2, weight: 1 }]);
  assertThrows(() => priorPreservationBatch([0], 0, 1, 1), RangeError, "instanceCount");
});

Deno.test("class images: generated with seed = index, cached per model and prompt, topped up, deterministic", async () => {
  await withTemp((dir) =>
    withRunner(async (runner) => {
      const open = (prompt: string) =>
        ClassImageCache.open(runner, {
          cacheDir: dir,
          model: MODEL,
          prompt,
          sampling: { steps: 2, guidanceScale: 5 },
        });
      const a = await open("a star");
      try {
        assert(a.dir.startsWith(`${dir}/class_images/`) && /\/[0-9a-f]{64}$/.test(a.dir), a.dir);
        assertEquals(await a.ensure(2), { generated: 2, reused: 0 });
        assertEquals(await a.ensure(3), { generated: 1, reused: 2 }, "topped up");
        assertEquals(await a.ensure(3), { generated: 0, reused: 3 });
        assertEquals(await a.cachedIndices(), [0, 1, 2]);
        const meta = JSON.parse(await Deno.readTextFile(`${a.dir}/meta.json`));
        assertEquals([meta.prompt, meta.steps], ["a star", 2]);
        // Regenerated alone, image 1 has the same bytes.
        const bytes = await Deno.readFile(`${a.dir}/${classImageName(1)}`);
        await Deno.remove(`${a.dir}/${classImageName(1)}`);
        assertEquals(await a.ensure(3), { generated: 1, reused: 2 });
        assertEquals(await Deno.readFile(`${a.dir}/${classImageName(1)}`), bytes);
      } finally {
        await a.release();
      }
      // Same model and prompt: the same folder, served from disk without a pipeline.
      const again = await open("a star");
      assertEquals(again.dir, a.dir);
      assertEquals((await again.image(2)).width, 64);
      assertEquals([again.generated, again.reused], [0, 1]);
      const other = await open("a circle");
      assert(other.dir !== a.dir, "another prompt, another folder");
      assertEquals(await other.cachedIndices(), []);
      await assertRejects(() => open(" "), RangeError, "class prompt");
    })
  );
});

/** Records every batch the trainer is given (kind by caption, weight). */
async function recordingBatches<T>(fn: (batches: TrainingExample[][]) => Promise<T>): Promise<T> {
  const original = DiffusionTrainer.prototype.computeGradients;
  const batches: TrainingExample[][] = [];
  DiffusionTrainer.prototype.computeGradients = function (examples, rng) {
    batches.push(examples);
    return original.call(this, examples, rng);
  };
  try {
    return await fn(batches);
  } finally {
    DiffusionTrainer.prototype.computeGradients = original;
  }
}

Deno.test("LoRA with prior preservation: class examples join each batch; a diffusers-key LoRA the pipeline applies", async () => {
  await withTemp((dir) =>
    withRunner(async (runner) => {
      const out = `${dir}/rex`;
      const logs: string[] = [];
      const r = await recordingBatches(async (batches) => {
        const r = await dreamBooth(runner, {
          model: MODEL,
          images: subject(3),
          out,
          cacheDir: dir,
          config: {
            class_word: "star",
            steps: 3,
            num_class_images: 2,
            prior_loss_weight: 0.5,
            ...CHEAP_CLASS,
          },
          onLog: (l) => logs.push(l),
        });
        // Two evaluation passes (before, after) over the 3 instance images in batches of 2, and 3 steps.
        const steps = batches.filter((b) => b.some((e) => e.weight !== undefined));
        assertEquals(steps.length, 3);
        for (const b of steps) {
          assertEquals(b.map((e) => e.caption), ["a sks star", "a star"]);
          assertEquals(b.map((e) => e.weight), [2, 1]);
        }
        return r;
      });
      assertEquals(r.outputs, [`${out}/${LORA_FILE_NAME}`]);
      assertEquals(r.losses.length, 3);
      assert(r.losses.every(Number.isFinite) && Number.isFinite(r.evalLoss.after));
      assertEquals([r.config.with_prior_preservation, r.config.learning_rate], [true, 1e-3]);
      assert(r.classImages.generated >= 1 && r.classImages.generated <= 2, JSON.stringify(r.classImages));
      assert(logs.some((l) => l.includes(`2 class images of "a star"`)), logs.join("\n"));

      const bytes = await Deno.readFile(`${out}/${LORA_FILE_NAME}`);
      const file = readSafetensors(bytes, LORA_FILE_NAME);
      const base = await loadSafetensors(`${MODEL}/unet/diffusion_pytorch_model.safetensors`);
      const modules = base.names()
        .map((n) => n.replace(/\.weight$/, ""))
        .filter((m) => /attn[12]\.(to_q|to_k|to_v|to_out\.0)$/.test(m))
        .sort();
      assert(modules.some((m) => m.includes("attn1")) && modules.some((m) => m.includes("attn2")));
      assertEquals(
        file.names().sort(),
        modules.flatMap((m) => [`unet.${m}.lora.down.weight`, `unet.${m}.lora.up.weight`]).sort(),
      );
      assertEquals([file.metadata.format, file.metadata.lora_rank, file.metadata.lora_alpha], [
        "pt",
        "4",
        "4",
      ]);
      const info = JSON.parse(file.metadata.info);
      assertEquals([info.method, info.token, info.class_word, info.name], [
        "dreambooth",
        "sks",
        "star",
        "rex",
      ]);
      assertEquals([info.training_config.prior_loss_weight, info.training_config.steps], [0.5, 3]);

      const db = loadDreamBoothLora(bytes, LORA_FILE_NAME);
      assertEquals([db.token, db.classWord, db.instancePrompt, db.config.mode], [
        "sks",
        "star",
        "a sks star",
        "lora",
      ]);
      const pipe = await StableDiffusionPipeline.load(MODEL, runner);
      try {
        assertEquals([...db.lora.modules.keys()].sort(), pipe.loraModules.map((m) => m.path).sort());
        const o = { prompt: db.instancePrompt, seed: 3, steps: 3 };
        const none = (await pipe.generate(o)).images[0];
        const zero = (await pipe.generate({ ...o, adapters: [{ lora: db.lora, scale: 0 }] })).images[0];
        const one = (await pipe.generate({ ...o, adapters: [{ lora: db.lora, scale: 1 }] })).images[0];
        assertEquals(zero.rgb, none.rgb, "scale 0 is the base model");
        assert(one.rgb.some((v, i) => v !== none.rgb[i]), "scale 1 changes the image");
      } finally {
        await pipe.release();
      }
    })
  );
});

Deno.test("LoRA with train_text_encoder: text-encoder LoRA on the self-attention projections, applied at inference", async () => {
  await withTemp((dir) =>
    withRunner(async (runner) => {
      const out = `${dir}/rex`;
      const r = await dreamBooth(runner, {
        model: MODEL,
        images: subject(2),
        out,
        cacheDir: dir,
        config: { class_word: "star", steps: 3, with_prior_preservation: false, train_text_encoder: true },
      });
      const bytes = await Deno.readFile(r.outputs[0]);
      const file = readSafetensors(bytes, LORA_FILE_NAME);
      const text = file.names().filter((n) => n.startsWith("text_encoder."));
      // 2 layers x q/k/v/out_proj x (down, up), diffusers' key layout.
      assertEquals(text.length, 2 * 4 * 2);
      assert(
        text.every((n) =>
          /^text_encoder\.text_model\.encoder\.layers\.\d\.self_attn\.(q|k|v|out)_proj\.lora\.(down|up)\.weight$/
            .test(n)
        ),
        text.join(),
      );
      // The text LoRA trained: its up factors (zero at init) moved.
      assert(text.filter((n) => n.endsWith("up.weight")).every((n) => file.float32(n).some((v) => v !== 0)));
      const db = loadDreamBoothLora(bytes, LORA_FILE_NAME);
      const textModules = [...db.lora.modules.keys()].filter((p) => p.startsWith("encoder.layers."));
      assertEquals(textModules.length, 8);
      const pipe = await StableDiffusionPipeline.load(MODEL, runner);
      try {
        assertEquals(textModules.sort(), pipe.textLoraModules.map((m) => m.path).sort());
        // The text part alone changes the prompt's embedding, so the image.
        const textOnly = {
          ...db.lora,
          modules: new Map([...db.lora.modules].filter(([p]) => textModules.includes(p))),
        };
        const o = { prompt: db.instancePrompt, seed: 3, steps: 3 };
        const none = (await pipe.generate(o)).images[0];
        const withText = (await pipe.generate({ ...o, adapters: [{ lora: textOnly, scale: 1 }] })).images[0];
        assert(withText.rgb.some((v, i) => v !== none.rgb[i]), "the text-encoder LoRA changes the image");
        const e0 = await pipe.encodePrompt([db.instancePrompt]);
        const e1 = await pipe.encodePrompt([db.instancePrompt], [], [{ lora: textOnly, scale: 1 }]);
        const e2 = await pipe.encodePrompt([db.instancePrompt], [], [{ lora: textOnly, scale: 0 }]);
        assert(e1.f.some((v, i) => v !== e0.f[i]), "embedding changed");
        assertEquals(e2.f, e0.f, "scale 0 is the base text encoder");
      } finally {
        await pipe.release();
      }
    })
  );
});

Deno.test("full mode with train_text_encoder writes a model folder with a new UNet and text encoder", async () => {
  await withTemp((dir) =>
    withRunner(async (runner) => {
      const out = `${dir}/full`;
      const r = await dreamBooth(runner, {
        model: MODEL,
        images: subject(2),
        out,
        config: {
          class_word: "star",
          mode: "full",
          train_text_encoder: true,
          with_prior_preservation: false,
          steps: 2,
        },
      });
      assertEquals(r.outputs, [out]);
      assertEquals([r.classImages.dir, r.config.learning_rate], [null, 1e-4]);
      const changed = async (rel: string) => {
        const a = await loadSafetensors(`${MODEL}/${rel}`), b = await loadSafetensors(`${out}/${rel}`);
        assertEquals(b.names().sort(), a.names().sort(), rel);
        return a.names().filter((n) => b.float32(n).some((v, i) => v !== a.float32(n)[i])).length /
          a.names().length;
      };
      const unetMoved = await changed("unet/diffusion_pytorch_model.safetensors");
      const textMoved = await changed("text_encoder/model.safetensors");
      assert(
        unetMoved > 0.5 && textMoved > 0.5,
        `UNet ${unetMoved}, text encoder ${textMoved} of tensors moved`,
      );
      const info = JSON.parse(await Deno.readTextFile(`${out}/dreambooth.json`));
      assertEquals([info.token, info.class_word, info.training_config.mode], ["sks", "star", "full"]);
      assertEquals(
        await Deno.readFile(`${out}/vae/config.json`),
        await Deno.readFile(`${MODEL}/vae/config.json`),
      );
      const pipe = await StableDiffusionPipeline.load(out, runner, { cacheDir: `${dir}/onnx` });
      try {
        assertEquals((await pipe.generate({ prompt: "a sks star", seed: 1, steps: 2 })).images[0].width, 64);
      } finally {
        await pipe.release();
      }
    })
  );
});

Deno.test("a run resumed from its checkpoint replays the uninterrupted one (class images from the cache)", async () => {
  await withTemp((dir) =>
    withRunner(async (runner) => {
      const base: DreamBoothOptions = {
        model: MODEL,
        images: subject(2),
        out: "",
        cacheDir: `${dir}/cache`,
        config: { class_word: "star", steps: 4, num_class_images: 3, seed: 5, ...CHEAP_CLASS },
      };
      const whole = await dreamBooth(runner, { ...base, out: `${dir}/a/run`, checkpointEvery: 2 });
      const first = await dreamBooth(runner, {
        ...base,
        out: `${dir}/b/run`,
        config: { ...base.config, steps: 2 },
        checkpointEvery: 2,
      });
      assertEquals(first.classImages.generated, 0, "the first run filled the cache");
      const steps: number[] = [];
      const resumed = await dreamBooth(runner, {
        ...base,
        out: `${dir}/b/run`,
        checkpointEvery: 2,
        resume: true,
        onProgress: (e) => steps.push(e.step),
      });
      assertEquals(resumed.resumedFrom, 2);
      assertEquals(steps, [3, 4], "only the missing steps run");
      assertEquals(resumed.losses, whole.losses);
      assertEquals(
        await Deno.readFile(`${dir}/b/run/${LORA_FILE_NAME}`),
        await Deno.readFile(`${dir}/a/run/${LORA_FILE_NAME}`),
      );
      assertEquals((await listCheckpoints(`${dir}/a/run/checkpoints`)).map((c) => c.step), [2, 4]);
    })
  );
});

/** Option errors come before any model work. */
const NO_RUNNER = {} as EngineRunner;

Deno.test("dreamBooth refuses bad settings and no images before any model work", async () => {
  const o: DreamBoothOptions = { model: MODEL, images: subject(1), out: "/nonexistent/out", config: {} };
  await assertRejects(
    () => dreamBooth(NO_RUNNER, { ...o, images: [] }),
    RangeError,
    "at least one instance image",
  );
  await assertRejects(
    () => dreamBooth(NO_RUNNER, { ...o, config: { with_prior_preservation: true } }),
    RangeError,
    "needs class_word",
  );
  await assertRejects(() => dreamBooth(NO_RUNNER, { ...o, config: { steps: 0 } }), Error, "steps");
  await assertRejects(
    () => dreamBooth(NO_RUNNER, { ...o, checkpointEvery: 0 }),
    RangeError,
    "checkpointEvery",
  );
});
