/**
 * Test scaffolding for pipeline tests: the tiny model's pipeline on its own engine thread, stopped after.
 *
 * @example
 * ```ts
 * await withTinyPipeline(async (p) => await p.generate({ prompt: "a red circle", steps: 4 }));
 * ```
 */
import { EngineRunner } from "../ort/runner.ts";
import { StableDiffusionPipeline } from "./stable_diffusion.ts";

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
