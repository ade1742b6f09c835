/**
 * DPMSolverMultistepScheduler tests: parity with diffusers' DPM-Solver++ 2M chains (epsilon and v-prediction),
 * exactness for a perfect model at every order, first order = DDIM, and state handling.
 */
import { Rng } from "../random.ts";
import { assert, assertClose, assertEquals, assertThrows, relativeError } from "../testing.ts";
import { DDIMScheduler } from "./ddim.ts";
import { DPMSolverMultistepScheduler } from "./dpm_solver_multistep.ts";
import { assertChainMatches, loadSchedulerReference, replayChain, SD15 } from "./testing_reference.ts";

for (const pred of ["epsilon", "v_prediction"]) {
  Deno.test(`DPM-Solver++ 2M matches diffusers (${pred}): timesteps, scaled inputs, every step`, async () => {
    const ref = await loadSchedulerReference();
    const key = `dpmpp2m.${pred}`;
    const s = new DPMSolverMultistepScheduler(ref.configs[key]);
    assertEquals(s.config.lambda_min_clipped, -Infinity);
    const r = assertChainMatches(ref, key, s);
    // running the chain again after setTimesteps gives the same numbers (multistep state is reset)
    const again = replayChain(ref, key, s);
    assertEquals(again, r);
  });
}

/** A perfect model's output for x = alpha x0 + sigma eps at the step's sigma. */
function perfect(pred: string, x: Float32Array, x0: Float32Array, sigma: number): Float32Array {
  const alpha = 1 / Math.sqrt(sigma * sigma + 1), st = sigma * alpha;
  const eps = x.map((v, i) => (v - alpha * x0[i]) / st);
  if (pred === "epsilon") return eps;
  if (pred === "v_prediction") return eps.map((e, i) => alpha * e - st * x0[i]);
  return x0;
}

for (const order of [1, 2, 3]) {
  Deno.test(`DPM-Solver++ order ${order} with a perfect model lands on x0 (every prediction type, midpoint and heun)`, () => {
    for (const pred of ["epsilon", "v_prediction", "sample"]) {
      for (const solver of ["midpoint", "heun"]) {
        for (const karras of [false, true]) {
          const s = new DPMSolverMultistepScheduler({
            ...SD15,
            prediction_type: pred,
            solver_order: order,
            solver_type: solver,
            use_karras_sigmas: karras,
          });
          s.setTimesteps(12);
          const rng = new Rng(order);
          const x0 = rng.normal(256);
          let x: Float32Array = rng.normal(256);
          s.timesteps.forEach((t, i) => {
            x = s.step(perfect(pred, x, x0, s.sigmas[i]), t, x);
            const next = s.sigmas[i + 1], alpha = 1 / Math.sqrt(next * next + 1);
            if (i > 0) assertClose(s.predOriginalSample!, x0, 1e-4, `${pred} ${solver} x0 at step ${i}`);
            if (i === s.timesteps.length - 1) assertEquals(alpha, 1);
          });
          const e = relativeError(x, x0);
          assert(e < 1e-5, `${pred} ${solver} karras=${karras}: final vs x0 ${e}`);
        }
      }
    }
  });
}

Deno.test("DPM-Solver++ first order is DDIM (same timesteps)", () => {
  const dpm = new DPMSolverMultistepScheduler({ ...SD15, solver_order: 1, timestep_spacing: "trailing" });
  const ddim = new DDIMScheduler({
    ...SD15,
    timestep_spacing: "trailing",
    clip_sample: false,
    set_alpha_to_one: true,
  });
  dpm.setTimesteps(10);
  ddim.setTimesteps(10);
  assertEquals(dpm.timesteps, [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]);
  assertEquals(dpm.timesteps, ddim.timesteps);
  let a: Float32Array = new Rng(1).normal(64), b = a;
  dpm.timesteps.forEach((t, i) => {
    const m = new Rng(10 + i).normal(64);
    a = dpm.step(m, t, a);
    b = ddim.step(m, t, b);
    assertClose(a, b, 1e-5, `step ${i}`);
  });
});

Deno.test("DPM-Solver++: timesteps by spacing, lambda clipping, final sigma", () => {
  const s = new DPMSolverMultistepScheduler(SD15);
  s.setTimesteps(10);
  assertEquals(s.timesteps, [999, 899, 799, 699, 599, 500, 400, 300, 200, 100]);
  assertEquals(s.sigmas.length, 11);
  assertEquals(s.sigmas[10], 0);
  assertEquals(s.initNoiseSigma, 1);
  const lead = new DPMSolverMultistepScheduler({ ...SD15, timestep_spacing: "leading" });
  lead.setTimesteps(10);
  assertEquals(lead.timesteps, [901, 811, 721, 631, 541, 451, 361, 271, 181, 91]);
  // cosine schedule: clip lambda at -5.1 as diffusers' configs for it do
  const cos = new DPMSolverMultistepScheduler({
    beta_schedule: "squaredcos_cap_v2",
    lambda_min_clipped: -5.1,
  });
  const first = [...cos.trainLambdas].reverse().findIndex((l) => l >= -5.1);
  cos.setTimesteps(5);
  assert(first > 0, "something is clipped");
  assertEquals(first, 4); // numpy: np.searchsorted(np.flip(lambda_t), -5.1)
  assertEquals(cos.timesteps, [995, 796, 597, 398, 199]); // linspace(0, 1000 - 4 - 1, 6), rounded, reversed
  const min = new DPMSolverMultistepScheduler({ ...SD15, final_sigmas_type: "sigma_min" });
  min.setTimesteps(10);
  assertClose([min.sigmas[10]], [min.trainSigmas[0]], 0);
});

Deno.test("DPM-Solver++: errors and begin index", () => {
  const s = new DPMSolverMultistepScheduler(SD15);
  assertThrows(() => s.step(new Float32Array(4), 999, new Float32Array(4)), Error, "setTimesteps");
  s.setTimesteps(10);
  const x = new Rng(1).normal(16);
  assert(s.scaleModelInput(x, 999) === x, "no input scaling");
  s.setBeginIndex(5);
  const sigma = s.sigmas[5], alpha = 1 / Math.sqrt(sigma * sigma + 1);
  const ns = s.noiseScales(s.timesteps[5]);
  assertClose([ns.signal, ns.noise], [alpha, sigma * alpha], 1e-6);
  const out = s.step(new Float32Array(16), s.timesteps[5], x);
  // the first step from index 5 is first order; with zero noise predicted, x0 = x / alpha_s and x_t = alpha_t x0
  const t6 = s.sigmas[6], a6 = 1 / Math.sqrt(t6 * t6 + 1);
  assertClose(out, x.map((v) => a6 / alpha * v), 1e-5);
  assertThrows(() => s.step(new Float32Array(3), 1, new Float32Array(4)), RangeError);
});
