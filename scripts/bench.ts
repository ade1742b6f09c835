/**
 * `deno task bench`: speed figures for BENCHMARKS.md, on this machine. Not a test (nothing here is timed in CI).
 * Prints UNet evaluations per second (batch 2, as one classifier-free-guidance step) and end-to-end seconds
 * per image (20 DDIM steps, text encoder + UNet + VAE decode) for the tiny model, then training steps per
 * second (forward + backward + AdamW, batch 4) for a LoRA run (rank 4 on the attention projections) and a full
 * fine-tune (every UNet and text-encoder weight), then the time of Custom Diffusion's closed-form merge on SD
 * 1.5-sized matrices (`scripts/bench_merge.ts`: 16 cross-attention layers' K and V, 768-dim features, 200
 * regularization captions x 77 tokens).
 *
 * Usage: deno task bench [--model models/tiny-shapes] [--ep cpu] [--runs 5] [--skip-training] [--skip-merge]
 *        deno task bench --edge   the HTTP edge's figures instead (`scripts/bench_edge.ts`, also
 *                                 `deno task bench:edge` with its own options)
 */
import { parseArgs } from "node:util";
import { EngineRunner } from "../gpu-worker/ort/runner.ts";
import { StableDiffusionPipeline } from "../gpu-worker/pipelines/stable_diffusion.ts";
import type { ExecutionProvider } from "../gpu-worker/ort/session.ts";
import { DEFAULT_LORA_TARGETS, loadModelFolder } from "../gpu-worker/models/model_folder.ts";
import { DiffusionTrainer } from "../gpu-worker/training/diffusion_trainer.ts";
import { runTraining } from "../gpu-worker/training/loop.ts";
import { Rng } from "../gpu-worker/random.ts";
import { runEdgeBench } from "./bench_edge.ts";
import { benchMerge, formatMergeBench } from "./bench_merge.ts";

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
      edge: { type: "boolean" },
    },
  });
  if (values.edge) Deno.exit((await runEdgeBench({})) ? 0 : 1);
  const model = values.model ?? "models/tiny-shapes";
  const runs = Number(values.runs ?? 5);
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
