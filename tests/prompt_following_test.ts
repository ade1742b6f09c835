/**
 * The pretrained ShapesWorld base model follows prompts on held-out attribute combinations (never seen in
 * training), by the world's analytic checks. What it reaches today (BENCHMARKS.md, 200 prompts): background
 * colour 97.5%, object colour 56%, shape 12.5%. The targets (object colour 80%, shape in most) are
 * NOT met yet; this test pins what is achieved, well above chance (1 in 11 colours), so a regression fails.
 */
import { assert } from "../gpu-worker/testing.ts";
import { EngineRunner } from "../gpu-worker/ort/runner.ts";
import { StableDiffusionPipeline } from "../gpu-worker/pipelines/stable_diffusion.ts";
import { evaluatePromptFollowing } from "../gpu-worker/eval/prompt_following.ts";

const TINY = new URL("../models/tiny-shapes", import.meta.url).pathname;

Deno.test("the pretrained tiny model follows held-out prompts (background >= 90%, object colour >= 40%)", async () => {
  const runner = new EngineRunner();
  try {
    const pipe = await StableDiffusionPipeline.load(TINY, runner);
    const r = await evaluatePromptFollowing(pipe, { count: 40, seed: 7, steps: 20, guidanceScale: 5 });
    const misses = r.samples.filter((s) => !s.background || !s.colour || !s.shape)
      .slice(0, 8).map((s) => `${s.prompt} -> ${JSON.stringify(s.found)}`).join("\n");
    const msg = `rates ${JSON.stringify(r.rates)}; some misses:\n${misses}`;
    console.log(`held-out prompt following, 40 prompts: ${JSON.stringify(r.rates)}`);
    assert(r.rates.background >= 0.9, msg);
    assert(r.rates.colour >= 0.4, msg);
  } finally {
    runner.terminate();
  }
});
