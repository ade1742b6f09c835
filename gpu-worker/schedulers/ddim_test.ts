/**
 * DDIMScheduler tests: parity with diffusers' chains (epsilon and v-prediction) and closed-form properties.
 */
import { Rng } from "../random.ts";
import { assert, assertClose, assertEquals, assertThrows, relativeError } from "../testing.ts";
import { DDIMScheduler } from "./ddim.ts";
import { addNoise } from "./scheduler.ts";
import { assertChainMatches, loadSchedulerReference, SD15 } from "./testing_reference.ts";

for (const pred of ["epsilon", "v_prediction"]) {
  Deno.test(`DDIM matches diffusers (${pred}): timesteps, scaled inputs, every step`, async () => {
    const ref = await loadSchedulerReference();
    const key = `ddim.${pred}`;
    assertChainMatches(ref, key, new DDIMScheduler(ref.configs[key]));
  });
}

/** The model output a perfect model gives for clean sample `x0` at `t`. */
function perfect(s: DDIMScheduler, x: Float32Array, x0: Float32Array, t: number): Float32Array {
  const a = s.alphasCumprod[t];
  const eps = x.map((v, i) => (v - Math.sqrt(a) * x0[i]) / Math.sqrt(1 - a));
  if (s.config.prediction_type === "epsilon") return eps;
  if (s.config.prediction_type === "v_prediction") {
    return eps.map((e, i) => Math.sqrt(a) * e - Math.sqrt(1 - a) * x0[i]);
  }
  return x0;
}

for (const pred of ["epsilon", "v_prediction", "sample"] as const) {
  Deno.test(`DDIM with a perfect ${pred} model recovers x0 at the final step`, () => {
    const s = new DDIMScheduler({
      ...SD15,
      set_alpha_to_one: true,
      clip_sample: false,
      prediction_type: pred,
    });
    s.setTimesteps(20);
    const rng = new Rng(11);
    const x0 = rng.normal(4 * 8 * 8), noise = rng.normal(4 * 8 * 8);
    let x = addNoise(s.alphasCumprod, x0, noise, s.timesteps[0]);
    for (const t of s.timesteps) {
      const out = perfect(s, x, x0, t);
      x = s.step(out, t, x);
      assertClose(s.predOriginalSample!, x0, 1e-5, `x0 prediction at ${t}`);
    }
    const e = relativeError(x, x0);
    assert(e < 1e-5, `final sample vs x0: ${e}`);
  });
}

Deno.test("DDIM: set_alpha_to_one false ends at alphas_cumprod[0], not at x0", () => {
  const s = new DDIMScheduler({ ...SD15, set_alpha_to_one: false, clip_sample: false });
  s.setTimesteps(10);
  const x0 = new Rng(2).normal(64), eps = new Rng(3).normal(64);
  const t = s.timesteps[9];
  const a = s.alphasCumprod[t];
  const x = x0.map((v, i) => Math.sqrt(a) * v + Math.sqrt(1 - a) * eps[i]);
  const out = s.step(eps, t, x);
  const a0 = s.alphasCumprod[0];
  assertClose(out, x0.map((v, i) => Math.sqrt(a0) * v + Math.sqrt(1 - a0) * eps[i]), 1e-5);
});

Deno.test("DDIM: clip_sample clamps the predicted x0", () => {
  const s = new DDIMScheduler({ ...SD15, clip_sample: true, clip_sample_range: 1 });
  s.setTimesteps(10);
  const x = new Float32Array(64).fill(5);
  s.step(new Float32Array(64), s.timesteps[0], x);
  assert(s.predOriginalSample!.every((v) => v === 1), "clamped to 1");
});

Deno.test("DDIM: eta > 0 draws noise from the Rng (same seed, same result)", () => {
  const x = new Rng(5).normal(64), m = new Rng(6).normal(64);
  const run = (seed: number, eta: number) => {
    const s = new DDIMScheduler(SD15, { eta });
    s.setTimesteps(10);
    return s.step(m, s.timesteps[2], x, new Rng(seed));
  };
  assertEquals(run(1, 0.5), run(1, 0.5));
  assert(relativeError(run(1, 0.5), run(2, 0.5)) > 1e-3, "other seed, other noise");
  assertEquals(run(1, 0), run(2, 0), "eta 0 ignores the Rng");
  const s = new DDIMScheduler(SD15, { eta: 1 });
  s.setTimesteps(10);
  assertThrows(() => s.step(m, s.timesteps[0], x), Error, "needs an Rng");
});

Deno.test("DDIM: input checks", () => {
  const s = new DDIMScheduler(SD15);
  assertThrows(() => s.step(new Float32Array(4), 1, new Float32Array(4)), Error, "setTimesteps");
  assertThrows(() => s.setTimesteps(0), RangeError);
  assertThrows(() => s.setTimesteps(1001), RangeError);
  s.setTimesteps(10);
  assertThrows(() => s.step(new Float32Array(4), 1, new Float32Array(5)), RangeError, "lengths");
  assertThrows(() => s.step(new Float32Array(4), 1.5, new Float32Array(4)), RangeError);
  assertEquals(s.initNoiseSigma, 1);
  const x = new Float32Array([1, 2]);
  assert(s.scaleModelInput(x, 901) === x, "no input scaling");
});
