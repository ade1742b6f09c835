/**
 * The pretrained ShapesWorld base model follows prompts on held-out attribute combinations (never seen in
 * training), by the world's analytic checks, at the issue's targets: background colour right in at least 90%,
 * object colour in at least 80%, shape in most. Guidance 3 (chosen on `deno task eval --seed 2`'s prompts).
 * BENCHMARKS.md has the 200-prompt figures (`deno task eval --count 200 --seed 1`: 100% / 81.5% / 68.5%); on
 * this test's 40 prompts the model reaches 100% / 85% / 77.5%, so colour has 2 prompts of slack.
 */
import { assert } from "../gpu-worker/testing.ts";
import { EngineRunner } from "../gpu-worker/ort/runner.ts";
import { StableDiffusionPipeline } from "../gpu-worker/pipelines/stable_diffusion.ts";
import { evaluatePromptFollowing } from "../gpu-worker/eval/prompt_following.ts";

const TINY = new URL("../models/tiny-shapes", import.meta.url).pathname;

Deno.test("the pretrained tiny model follows held-out prompts (background >= 90%, colour >= 80%, shape > 50%)", async () => {
  const runner = new EngineRunner();
  try {
    const pipe = await StableDiffusionPipeline.load(TINY, runner);
    const r = await evaluatePromptFollowing(pipe, { count: 40, seed: 7, steps: 20, guidanceScale: 3 });
    const misses = r.samples.filter((s) => !s.background || !s.colour || !s.shape)
      .slice(0, 8).map((s) => `${s.prompt} -> ${JSON.stringify(s.found)}`).join("\n");
    const msg = `rates ${JSON.stringify(r.rates)}; some misses:\n${misses}`;
    console.log(`held-out prompt following, 40 prompts: ${JSON.stringify(r.rates)}`);
    assert(r.rates.background >= 0.9, msg);
    assert(r.rates.colour >= 0.8, msg);
    assert(r.rates.shape > 0.5, msg);
  } finally {
    runner.terminate();
  }
});
