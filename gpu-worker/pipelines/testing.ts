/**
 * Test scaffolding for pipeline tests: the tiny model's pipeline on its own engine thread, stopped after.
 *
 * @example
 * ```ts
 * await withTinyPipeline(async (p) => await p.generate({ prompt: "a red circle", steps: 4 }));
 * ```
 */
import { EngineRunner } from "../ort/runner.ts";
import { type LoraWeights, StableDiffusionPipeline } from "./stable_diffusion.ts";
import { Rng } from "../random.ts";

/** The committed tiny model's folder. */
export const TINY_MODEL = new URL("../../models/tiny-shapes", import.meta.url).pathname;

export async function withTinyPipeline(fn: (p: StableDiffusionPipeline) => Promise<void>): Promise<void> {
  const runner = new EngineRunner();
  try {
    await fn(await StableDiffusionPipeline.load(TINY_MODEL, runner));
  } finally {
    runner.terminate();
  }
}

/** A seeded random LoRA (rank `rank`) on every LoRA slot of the pipeline's plain UNet. */
export function randomLora(p: StableDiffusionPipeline, seed: number, rank = 2): LoraWeights {
  const rng = new Rng(seed);
  const modules = new Map();
  for (const m of p.loraModules) {
    modules.set(m.path, {
      rank,
      down: rng.normal(rank * m.inFeatures, 0.3),
      up: rng.normal(m.outFeatures * rank, 0.3),
    });
  }
  return { name: `random-${seed}`, modules };
}
