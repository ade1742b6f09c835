/**
 * The pretrained ShapesWorld base model follows prompts on held-out attribute combinations (never seen in
 * training), by the world's analytic checks. What it reaches today (BENCHMARKS.md, 200 prompts): background
 * colour 100%, object colour 73.5%, shape 69.5%; on this test's 40 prompts 100% / 75% / 65%. The issue's
 * object-colour target (80%) is NOT met yet; this test pins what is achieved (chance is 1 in 12 colours and 1
 * in 10 shapes), with a few prompts of slack, so a regression fails.
 */
import { assert } from "../gpu-worker/testing.ts";
import { EngineRunner } from "../gpu-worker/ort/runner.ts";
import { StableDiffusionPipeline } from "../gpu-worker/pipelines/stable_diffusion.ts";
import { evaluatePromptFollowing } from "../gpu-worker/eval/prompt_following.ts";

const TINY = new URL("../models/tiny-shapes", import.meta.url).pathname;

Deno.test("the pretrained tiny model follows held-out prompts (background >= 95%, colour >= 65%, shape >= 50%)", async () => {
  const runner = new EngineRunner();
  try {
    const pipe = await StableDiffusionPipeline.load(TINY, runner);
    const r = await evaluatePromptFollowing(pipe, { count: 40, seed: 7, steps: 20, guidanceScale: 5 });
    const misses = r.samples.filter((s) => !s.background || !s.colour || !s.shape)
      .slice(0, 8).map((s) => `${s.prompt} -> ${JSON.stringify(s.found)}`).join("\n");
    const msg = `rates ${JSON.stringify(r.rates)}; some misses:\n${misses}`;
    console.log(`held-out prompt following, 40 prompts: ${JSON.stringify(r.rates)}`);
    assert(r.rates.background >= 0.95, msg);
    assert(r.rates.colour >= 0.65, msg);
    assert(r.rates.shape >= 0.5, msg);
  } finally {
    runner.terminate();
  }
});
