/**
 * Fine-tuning the committed tiny model end to end: LoRA training lowers the fixed-noise evaluation loss and
 * writes a PEFT-layout adapter the pipeline applies; a run resumed from a checkpoint replays the uninterrupted
 * one bit for bit; full fine-tuning writes a loadable model folder; bad options, folders and images fail with
 * clear errors, and an AbortSignal stops a run.
 */
import { assert, assertEquals, assertRejects, relativeError } from "../testing.ts";
import type { EngineRunner } from "../ort/runner.ts";
import { withRunner, withTemp as withTempDir } from "../ort/test_scaffold.ts";
import { fineTune, type FineTuneOptions, type FineTuneResult } from "./finetune.ts";
import { decodeLora, LORA_FILE_NAME, toLoraWeights } from "../adapters/lora.ts";
import { StableDiffusionPipeline } from "../pipelines/stable_diffusion.ts";
import { loadSafetensors, readSafetensors } from "../models/safetensors.ts";
import { renderScene } from "../shapesworld/render.ts";
import { sampleScene } from "../shapesworld/world.ts";
import { encodePng, type RgbImage } from "../image/png.ts";
import { listCheckpoints } from "./checkpoint.ts";
import { Rng } from "../random.ts";

const MODEL = new URL("../../models/tiny-shapes", import.meta.url).pathname;
const PROMPT = "a sks star";
/** The LoRA targets: every self- and cross-attention projection. */
const TARGET = /attn[12]\.(to_q|to_k|to_v|to_out\.0)$/;

/** A purple checkered star on white, one of a small "subject" set. */
function star(i: number, size = 64): RgbImage {
  const scene = sampleScene(new Rng(i), {
    objectCount: 1,
    shapes: ["star"],
    colours: ["purple"],
    textures: ["checkered"],
    backgrounds: ["white"],
  });
  return renderScene(scene, size);
}

async function imageFolder(dir: string, count: number, sizes: number[] = [64]): Promise<string> {
  await Deno.mkdir(dir, { recursive: true });
  for (let i = 0; i < count; i++) {
    await Deno.writeFile(`${dir}/star${i}.png`, encodePng(star(i, sizes[i % sizes.length])));
  }
  return dir;
}

const withTemp = <T>(fn: (dir: string) => Promise<T>) => withTempDir("finetune_test_", fn);

/** One LoRA run shared by the loss and the pipeline tests: its result and the adapter file's bytes. */
let loraRun: Promise<{ result: FineTuneResult; bytes: Uint8Array }> | undefined;
const LORA_STEPS = 40, LORA_RANK = 4, LORA_ALPHA = 8;
/** The LoRA run's training seed; `FINETUNE_SEED` re-measures the figures below at another. */
const LORA_SEED = Number(Deno.env.get("FINETUNE_SEED") ?? 0);

function trainedLora() {
  return loraRun ??= withTemp((dir) =>
    withRunner(async (runner) => {
      const out = `${dir}/sks-star`;
      const result = await fineTune(runner, {
        model: MODEL,
        images: await imageFolder(`${dir}/images`, 4),
        prompt: PROMPT,
        method: "lora",
        steps: LORA_STEPS,
        learningRate: 1e-3,
        rank: LORA_RANK,
        alpha: LORA_ALPHA,
        seed: LORA_SEED,
        out,
      });
      assertEquals(result.outputs, [`${out}/${LORA_FILE_NAME}`]);
      return { result, bytes: await Deno.readFile(`${out}/${LORA_FILE_NAME}`) };
    })
  );
}

Deno.test("LoRA fine-tuning lowers the evaluation loss and writes a PEFT-layout adapter for every attention projection", async () => {
  const { result, bytes } = await trainedLora();
  const { before, after } = result.evalLoss;
  console.log(
    `eval loss ${before.toFixed(4)} -> ${after.toFixed(4)} (${((after / before - 1) * 100).toFixed(1)}%)`,
  );
  // Measured on the installed model (eighth session): 0.6261 -> 0.1909 (-69.5%) at seed 0, 0.4000 -> 0.1445
  // (-63.9%) at FINETUNE_SEED=1 (the figure asserted before, -5%, was measured on the random model).
  assert(
    after < 0.6 * before,
    `eval loss ${before.toFixed(4)} -> ${after.toFixed(4)}: expected at least -40%`,
  );
  assertEquals(result.losses.length, LORA_STEPS);
  assert(result.losses.every(Number.isFinite), "every loss is finite");

  const base = await loadSafetensors(`${MODEL}/unet/diffusion_pytorch_model.safetensors`);
  const modules = base.names()
    .filter((n) => n.endsWith(".weight") && TARGET.test(n.slice(0, -".weight".length)))
    .map((n) => n.slice(0, -".weight".length))
    .sort();
  assert(modules.length >= 8, `the tiny UNet has attention projections (found ${modules.length})`);
  assert(modules.some((m) => m.includes("attn1")) && modules.some((m) => m.includes("attn2")));

  const file = readSafetensors(bytes, LORA_FILE_NAME);
  assertEquals(
    file.names().sort(),
    modules.flatMap((m) => [`unet.${m}.lora_A.weight`, `unet.${m}.lora_B.weight`]).sort(),
  );
  let params = 0;
  for (const m of modules) {
    const [out, inF] = base.entry(`${m}.weight`).shape;
    assertEquals(file.entry(`unet.${m}.lora_A.weight`).shape, [LORA_RANK, inF], m);
    assertEquals(file.entry(`unet.${m}.lora_B.weight`).shape, [out, LORA_RANK], m);
    params += LORA_RANK * (inF + out);
  }
  assertEquals(result.trainedParameters, params);
  assertEquals([file.metadata.lora_rank, file.metadata.lora_alpha], [String(LORA_RANK), String(LORA_ALPHA)]);

  const lora = decodeLora(bytes, LORA_FILE_NAME);
  assertEquals([lora.rank, lora.alpha, lora.name], [LORA_RANK, LORA_ALPHA, "sks-star"]);
  assertEquals([lora.info?.prompt, lora.info?.steps, lora.info?.seed], [PROMPT, LORA_STEPS, LORA_SEED]);
  // Training moved the up factors off their zero init.
  assert([...lora.modules.values()].every((m) => m.up.some((x) => x !== 0)), "every lora_B was trained");
});

Deno.test("the trained adapter changes generated pixels at scale 1 and scale 0 reproduces the base model", async () => {
  const { bytes } = await trainedLora();
  const lora = toLoraWeights(decodeLora(bytes, LORA_FILE_NAME));
  await withRunner(async (runner) => {
    const pipe = await StableDiffusionPipeline.load(MODEL, runner);
    try {
      // The trainer's module paths are the pipeline's LoRA slots.
      assertEquals([...lora.modules.keys()].sort(), pipe.loraModules.map((m) => m.path).sort());
      const o = { prompt: PROMPT, seed: 5, steps: 6 };
      const none = (await pipe.generate(o)).images[0];
      const one = (await pipe.generate({ ...o, adapters: [{ lora, scale: 1 }] })).images[0];
      const zero = (await pipe.generate({ ...o, adapters: [{ lora, scale: 0 }] })).images[0];
      assertEquals(zero.rgb, none.rgb, "scale 0 is a no-op");
      const changed = one.rgb.reduce((n, v, i) => n + (v !== none.rgb[i] ? 1 : 0), 0);
      const rel = relativeError(Float32Array.from(one.rgb), Float32Array.from(none.rgb));
      console.log(`${changed} of ${one.rgb.length} values changed, relative difference ${rel.toFixed(3)}`);
      // Measured on the installed model: 12262 and 12264 of 12288 values change, relative difference 1.026 and
      // 1.036 (seeds 0 and 1; 11800 and 0.10 on the random model, where the figures were first set).
      assert(
        changed > 0.9 * one.rgb.length && rel > 0.3,
        `${changed}/${one.rgb.length} values changed, rel ${rel}`,
      );
    } finally {
      await pipe.release();
    }
  });
});

Deno.test("a run resumed from its checkpoint replays the uninterrupted run: same losses, same adapter bytes", async () => {
  await withTemp((dir) =>
    withRunner(async (runner) => {
      const images = await imageFolder(`${dir}/images`, 3);
      const base: FineTuneOptions = {
        model: MODEL,
        images,
        prompt: PROMPT,
        method: "lora",
        steps: 6,
        seed: 3,
        out: "",
      };
      // Same folder name (it is the adapter's name in the metadata), different parents.
      const whole = await fineTune(runner, { ...base, out: `${dir}/a/run`, checkpointEvery: 2 });
      const first = await fineTune(runner, { ...base, out: `${dir}/b/run`, steps: 3, checkpointEvery: 3 });
      const steps: number[] = [];
      const resumed = await fineTune(runner, {
        ...base,
        out: `${dir}/b/run`,
        checkpointEvery: 3,
        resume: true,
        onProgress: (e) => steps.push(e.step),
      });
      assertEquals(first.losses, whole.losses.slice(0, 3));
      assertEquals(steps, [4, 5, 6], "the resumed run only does the missing steps");
      assertEquals(resumed.losses, whole.losses);
      assertEquals(resumed.evalLoss.after, whole.evalLoss.after);
      assertEquals(
        await Deno.readFile(`${dir}/b/run/${LORA_FILE_NAME}`),
        await Deno.readFile(`${dir}/a/run/${LORA_FILE_NAME}`),
      );
      // Checkpoints at 2, 4 and 6: rotation keeps the last two.
      assertEquals((await listCheckpoints(`${dir}/a/run/checkpoints`)).map((c) => c.step), [4, 6]);
      assertEquals((await listCheckpoints(`${dir}/b/run/checkpoints`)).map((c) => c.step), [3, 6]);
      for (const d of ["a", "b"]) {
        const names = [];
        for await (const e of Deno.readDir(`${dir}/${d}/run/checkpoints`)) names.push(e.name);
        assert(names.length <= 2, `${d}: ${names}`);
      }
    })
  );
});

Deno.test("full fine-tuning writes a model folder the pipeline loads, from any base path and image size", async () => {
  await withTemp(async (dir) => {
    // The base sits under a hidden folder (as in ~/.cache) and has a hidden `.onnx` cache the copy skips.
    const model = `${dir}/.cache/tiny-shapes`;
    await copyTree(MODEL, model);
    await Deno.mkdir(`${model}/.onnx`);
    await Deno.writeTextFile(`${model}/.onnx/stale`, "x");
    // Smaller, larger and non-square images are resized (shorter side to 64) and center-cropped.
    const images = await imageFolder(`${dir}/images`, 2, [48, 128]);
    const wide = star(7, 128);
    const cropped: RgbImage = { width: 128, height: 80, rgb: wide.rgb.slice(0, 128 * 80 * 3) };
    await Deno.writeFile(`${images}/wide.png`, encodePng(cropped));
    await withRunner(async (runner) => {
      const out = `${dir}/full`;
      const r = await fineTune(runner, {
        model,
        images,
        prompt: PROMPT,
        method: "full",
        steps: 2,
        seed: 0,
        out,
      });
      assertEquals(r.outputs, [out]);
      assertEquals(r.losses.length, 2);
      assert(Number.isFinite(r.evalLoss.before) && Number.isFinite(r.evalLoss.after));

      for (
        const f of [
          "model_index.json",
          "text_encoder/model.safetensors",
          "vae/config.json",
          "unet/config.json",
        ]
      ) {
        assertEquals(await Deno.readFile(`${out}/${f}`), await Deno.readFile(`${MODEL}/${f}`), f);
      }
      await assertRejects(() => Deno.stat(`${out}/.onnx`), Deno.errors.NotFound);
      const before = await loadSafetensors(`${MODEL}/unet/diffusion_pytorch_model.safetensors`);
      const after = await loadSafetensors(`${out}/unet/diffusion_pytorch_model.safetensors`);
      assertEquals(after.names().sort(), before.names().sort());
      assertEquals(r.trainedParameters, before.names().reduce((s, n) => s + before.float32(n).length, 0));
      const moved = before.names().filter((n) => relativeError(after.float32(n), before.float32(n)) > 0);
      assert(moved.length > before.names().length / 2, `only ${moved.length} UNet tensors changed`);

      const pipe = await StableDiffusionPipeline.load(out, runner, { cacheDir: `${dir}/onnx` });
      try {
        const img = (await pipe.generate({ prompt: PROMPT, seed: 1, steps: 3 })).images[0];
        assertEquals([img.width, img.height], [64, 64]);
      } finally {
        await pipe.release();
      }
    });
  });
});

async function copyTree(from: string, to: string) {
  await Deno.mkdir(to, { recursive: true });
  for await (const e of Deno.readDir(from)) {
    if (e.name.startsWith(".")) continue;
    if (e.isDirectory) await copyTree(`${from}/${e.name}`, `${to}/${e.name}`);
    else await Deno.copyFile(`${from}/${e.name}`, `${to}/${e.name}`);
  }
}

/** Option and input errors come before any model work, so no engine thread is needed. */
const NO_RUNNER = {} as EngineRunner;

Deno.test("fineTune refuses an unknown method, zero steps, an empty folder and an unreadable image", async () => {
  await withTemp(async (dir) => {
    const images = await imageFolder(`${dir}/images`, 1);
    const o: FineTuneOptions = {
      model: MODEL,
      images,
      prompt: PROMPT,
      method: "lora",
      steps: 2,
      out: `${dir}/out`,
    };
    await assertRejects(
      () => fineTune(NO_RUNNER, { ...o, method: "dora" as "lora" }),
      RangeError,
      `method must be "lora" or "full", got "dora"`,
    );
    await assertRejects(
      () => fineTune(NO_RUNNER, { ...o, steps: 0 }),
      RangeError,
      "steps must be an integer",
    );
    await assertRejects(() => fineTune(NO_RUNNER, { ...o, steps: 2.5 }), RangeError, "got 2.5");
    await assertRejects(() => fineTune(NO_RUNNER, { ...o, images: [] }), RangeError, "no training images");

    await Deno.mkdir(`${dir}/empty`);
    await Deno.writeTextFile(`${dir}/empty/notes.txt`, "not an image");
    const empty = await assertRejects(() => fineTune(NO_RUNNER, { ...o, images: `${dir}/empty` }));
    assert(
      empty.message.includes(`${dir}/empty`) && empty.message.includes("no training images"),
      empty.message,
    );

    const png = await Deno.readFile(`${images}/star0.png`);
    await Deno.writeFile(`${images}/star1.png`, png.slice(0, 60));
    const bad = await assertRejects(() => fineTune(NO_RUNNER, { ...o, images }));
    assert(bad.message.startsWith(`${images}/star1.png`), bad.message);
    await Deno.writeTextFile(`${images}/star1.png`, "hello");
    await assertRejects(
      () => fineTune(NO_RUNNER, { ...o, images }),
      Error,
      `${images}/star1.png: not a PNG or JPEG`,
    );
    assertEquals(
      [...Deno.readDirSync(dir)].map((e) => e.name).sort(),
      ["empty", "images"],
      "nothing written",
    );
  });
});

Deno.test("an AbortSignal stops fine-tuning with an AbortError after checkpointing the last update", async () => {
  await withTemp((dir) =>
    withRunner(async (runner) => {
      const ac = new AbortController();
      const steps: number[] = [];
      const out = `${dir}/out`;
      const e = await assertRejects(() =>
        fineTune(runner, {
          model: MODEL,
          images: [{ path: "star.png", stem: "star", image: star(0), caption: null }],
          prompt: PROMPT,
          method: "lora",
          steps: 50,
          seed: 0,
          out,
          checkpointEvery: 100,
          signal: ac.signal,
          onProgress: (p) => {
            steps.push(p.step);
            if (p.step === 2) ac.abort();
          },
        })
      );
      assertEquals(e.name, "AbortError");
      assertEquals(steps, [1, 2]);
      assertEquals((await listCheckpoints(`${out}/checkpoints`)).map((c) => c.step), [2]);
      await assertRejects(() => Deno.stat(`${out}/${LORA_FILE_NAME}`), Deno.errors.NotFound);
    })
  );
});
