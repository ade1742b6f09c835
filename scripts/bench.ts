/**
 * `deno task bench`: speed figures for BENCHMARKS.md, on this machine. Not a test (nothing here is timed in CI).
 * Prints UNet evaluations per second (batch 2, as one classifier-free-guidance step) and end-to-end seconds
 * per image (20 DDIM steps, text encoder + UNet + VAE decode) for the tiny model, then training steps per
 * second (forward + backward + AdamW, batch 4) for a LoRA run (rank 4 on the attention projections) and a full
 * fine-tune (every UNet and text-encoder weight), then the time of Custom Diffusion's closed-form merge on SD
 * 1.5-sized matrices (`scripts/bench_merge.ts`: 16 cross-attention layers' K and V, 768-dim features, 200
 * regularization captions x 77 tokens), and the step time with 0, 1, 10 and 50 Concept Sliders applied (random
 * rank-4 LoRAs on the sliders' default `noxattn` modules, and on `c3lier` (attention + convolutions): all on
 * the same slots, one UNet evaluation per step), and SeeCoder's encode time per reference image next to the UNet
 * step time with its embeddings (`scripts/bench_seecoder.ts`; when the model folder has a `seecoder/`), and
 * first the host-side figures (`scripts/bench_host.ts`: CLIP tokenizer load and encode, ShapesWorld render).
 *
 * Usage: deno task bench [--model models/tiny-shapes] [--ep cpu] [--runs 5] [--skip-training] [--skip-merge]
 *        [--skip-sliders] [--skip-seecoder] [--skip-host]
 *        deno task bench --edge   the HTTP edge's figures instead (`scripts/bench_edge.ts`, also
 *                                 `deno task bench:edge` with its own options)
 */
import { parseArgs } from "node:util";
import { EngineRunner } from "../gpu-worker/ort/runner.ts";
import { type LoraWeights, StableDiffusionPipeline } from "../gpu-worker/pipelines/stable_diffusion.ts";
import { sliderScale } from "../gpu-worker/pipelines/sliders.ts";
import { loraTargets } from "../gpu-worker/models/lora_targets.ts";
import type { ExecutionProvider } from "../gpu-worker/ort/session.ts";
import { DEFAULT_LORA_TARGETS, loadModelFolder } from "../gpu-worker/models/model_folder.ts";
import { DiffusionTrainer } from "../gpu-worker/training/diffusion_trainer.ts";
import { runTraining } from "../gpu-worker/training/loop.ts";
import { Rng } from "../gpu-worker/random.ts";
import { runEdgeBench } from "./bench_edge.ts";
import { benchMerge, formatMergeBench } from "./bench_merge.ts";
import { benchSeeCoder, formatSeeCoderBench } from "./bench_seecoder.ts";
import { benchHost, formatHostBench } from "./bench_host.ts";

/** Steps/s of forward + backward + AdamW on random latents (after 3 warm-up steps). */
async function trainingStepsPerSecond(
  runner: EngineRunner,
  model: string,
  mode: "lora" | "full",
  steps: number,
) {
  const folder = await loadModelFolder(model);
  const trainer = await DiffusionTrainer.create(
    runner,
    folder,
    mode === "lora"
      ? { batch: 4, lora: { targets: DEFAULT_LORA_TARGETS, rank: 4, alpha: 4 } }
      : { batch: 4, unetTrainable: () => true, textEncoder: { trainable: () => true } },
  );
  const n = folder.unetConfig.in_channels * folder.unetConfig.sample_size ** 2;
  const data = Array.from(
    { length: 4 },
    (_, i) => ({ latent: new Rng(i).normal(n), caption: "a red circle" }),
  );
  let t0 = 0;
  await runTraining({
    params: trainer.params(),
    datasetSize: 4,
    steps: steps + 3,
    batchSize: 4,
    seed: 0,
    gradients: (mb) => trainer.computeGradients(mb.indices.map((i) => data[i]), mb.rng),
    onProgress: (e) => {
      if (e.step === 3) t0 = performance.now();
    },
  });
  await trainer.release();
  return steps / ((performance.now() - t0) / 1000);
}

/** Median ms per denoising step with `count` random rank-4 sliders on `method`'s modules. */
async function sliderStepMs(
  pipe: StableDiffusionPipeline,
  method: "noxattn" | "c3lier",
  count: number,
  runs: number,
): Promise<number> {
  const targets = loraTargets(method);
  const modules = [...pipe.servableLoraModules.values()].filter((m) => targets.some((r) => r.test(m.path)));
  const adapters = Array.from({ length: count }, (_, k) => {
    const rng = new Rng(100 + k);
    const lora: LoraWeights = { name: `slider-${k}`, alpha: 1, modules: new Map() };
    for (const m of modules) {
      lora.modules.set(m.path, {
        rank: 4,
        down: rng.normal(4 * m.inFeatures, 0.01),
        up: rng.normal(m.outFeatures * 4, 0.01),
      });
    }
    return { lora, scale: sliderScale(((k % 5) - 2) / 2) };
  });
  const prompt = "a large red circle on the left, blue background";
  await pipe.generate({ prompt, seed: 0, steps: 2, adapters }); // builds the variant, warms it
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    let last = 0;
    await pipe.generate({
      prompt,
      seed: i,
      steps: 20,
      adapters,
      onStep: () => {
        const now = performance.now();
        if (last) times.push(now - last);
        last = now;
      },
    });
  }
  return median(times);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      model: { type: "string" },
      ep: { type: "string" },
      runs: { type: "string" },
      "skip-training": { type: "boolean" },
      "skip-merge": { type: "boolean" },
      "skip-sliders": { type: "boolean" },
      "skip-seecoder": { type: "boolean" },
      "skip-host": { type: "boolean" },
      edge: { type: "boolean" },
    },
  });
  if (values.edge) Deno.exit((await runEdgeBench({})) ? 0 : 1);
  const model = values.model ?? "models/tiny-shapes";
  const runs = Number(values.runs ?? 5);
  if (!values["skip-host"]) console.log(formatHostBench(await benchHost(runs)));
  const runner = new EngineRunner();
  try {
    const pipe = await StableDiffusionPipeline.load(model, runner, {
      ep: (values.ep ?? "cpu") as ExecutionProvider,
    });
    const prompt = "a large red circle on the left, blue background";
    await pipe.generate({ prompt, seed: 0, steps: 2 }); // warm-up
    const perImage: number[] = [];
    const evalRates: number[] = [];
    for (let i = 0; i < runs; i++) {
      let stepStart = 0;
      const stepTimes: number[] = [];
      const t0 = performance.now();
      await pipe.generate({
        prompt,
        seed: i,
        steps: 20,
        onStep: () => {
          const now = performance.now();
          if (stepStart) stepTimes.push(now - stepStart);
          stepStart = now;
        },
      });
      perImage.push((performance.now() - t0) / 1000);
      evalRates.push(1000 / median(stepTimes));
    }
    const cores = navigator.hardwareConcurrency;
    console.log(
      `model ${model}, ep ${values.ep ?? "cpu"}, ${cores} cores, ${Deno.build.os}-${Deno.build.arch}`,
    );
    console.log(
      `UNet evaluations/s (batch 2, one CFG step, 64x64 image / 16x16 latent): ${
        median(evalRates).toFixed(1)
      }`,
    );
    console.log(
      `end-to-end s/image (20 DDIM steps, CFG 7.5): ${median(perImage).toFixed(3)} (median of ${runs})`,
    );
    if (!values["skip-seecoder"]) {
      const sc = await benchSeeCoder(pipe, runs);
      console.log(sc ? formatSeeCoderBench(sc) : "SeeCoder: this model folder has none (seecoder/)");
    }
    if (!values["skip-sliders"]) {
      for (const method of ["noxattn", "c3lier"] as const) {
        const times: string[] = [];
        let base = 0;
        for (const count of [0, 1, 10, 50]) {
          const ms = await sliderStepMs(pipe, method, count, runs);
          if (count === 0) base = ms;
          times.push(`${count}: ${ms.toFixed(2)} ms (x${(ms / base).toFixed(2)})`);
        }
        console.log(`step time with N ${method} sliders (batch 2, 20 steps, median): ${times.join(", ")}`);
      }
    }
    if (!values["skip-training"]) {
      for (const mode of ["lora", "full"] as const) {
        const rate = await trainingStepsPerSecond(runner, model, mode, 20);
        const what = mode === "lora"
          ? "LoRA rank 4, attention projections"
          : "full fine-tune, UNet + text encoder";
        console.log(`training steps/s (${what}, batch 4): ${rate.toFixed(2)}`);
      }
    }
    if (!values["skip-merge"]) {
      for (const mode of ["exact", "sequence"] as const) {
        console.log(formatMergeBench(benchMerge({ runs: 2, mode })));
      }
    }
  } finally {
    runner.terminate();
  }
}
