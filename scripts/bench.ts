/**
 * `deno task bench`: speed figures for BENCHMARKS.md, on this machine. Not a test (nothing here is timed in CI).
 * Prints UNet evaluations per second (batch 2, as one classifier-free-guidance step) and end-to-end seconds
 * per image (20 DDIM steps, text encoder + UNet + VAE decode) for the tiny model.
 *
 * Usage: deno task bench [--model models/tiny-shapes] [--ep cpu] [--runs 5]
 */
import { parseArgs } from "node:util";
import { EngineRunner } from "../gpu-worker/ort/runner.ts";
import { StableDiffusionPipeline } from "../gpu-worker/pipelines/stable_diffusion.ts";
import type { ExecutionProvider } from "../gpu-worker/ort/session.ts";

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { model: { type: "string" }, ep: { type: "string" }, runs: { type: "string" } },
  });
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
  } finally {
    runner.terminate();
  }
}
