/**
 * EulerDiscreteScheduler tests: parity with diffusers' chains (epsilon and v-prediction), the sigma schedule,
 * and exact recovery of x0 from a perfect model.
 */
import { Rng } from "../random.ts";
import { assert, assertClose, assertEquals, assertThrows, relativeError } from "../testing.ts";
import { EulerDiscreteScheduler } from "./euler_discrete.ts";
import { assertChainMatches, loadSchedulerReference, SD15 } from "./testing_reference.ts";

for (const pred of ["epsilon", "v_prediction"]) {
  Deno.test(`Euler matches diffusers (${pred}): timesteps, scaled inputs, every step`, async () => {
    const ref = await loadSchedulerReference();
    const key = `euler.${pred}`;
    const s = new EulerDiscreteScheduler(ref.configs[key]);
    s.setTimesteps(ref.io.int(`${key}.timesteps`).length);
    const init = ref.io.float32(`${key}.init`);
    // the fixture's init is unit noise times init_noise_sigma; its std tells that sigma back roughly
    const std = Math.sqrt(init.reduce((a, v) => a + v * v, 0) / init.length);
    assert(
      Math.abs(std / s.initNoiseSigma - 1) < 0.2,
      `init std ${std} vs initNoiseSigma ${s.initNoiseSigma}`,
    );
    assertChainMatches(ref, key, s);
  });
}

Deno.test("Euler sigmas: sqrt((1 - acp) / acp) at the timesteps, then 0; initNoiseSigma by spacing", () => {
  const s = new EulerDiscreteScheduler(SD15);
  s.setTimesteps(10);
  assertEquals(s.timesteps, [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]);
  const sig = (t: number) => Math.sqrt((1 - s.alphasCumprod[t]) / s.alphasCumprod[t]);
  assertClose(Array.from(s.sigmas), [...s.timesteps.map(sig), 0], 1e-6);
  assertEquals(s.initNoiseSigma, s.sigmas[0]);
  assertClose([s.initNoiseSigma], [14.6146], 1e-4, "SD 1.5's largest sigma");
  // fractional timesteps interpolate sigma linearly in t
  s.setTimesteps(7);
  assertEquals(s.timesteps[1], 832.5);
  assertClose([s.sigmas[1]], [(sig(832) + sig(833)) / 2], 1e-6);
  const lead = new EulerDiscreteScheduler({ ...SD15, timestep_spacing: "leading" });
  lead.setTimesteps(10);
  assertEquals(lead.timesteps, [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]);
  assertClose([lead.initNoiseSigma], [Math.sqrt(lead.sigmas[0] ** 2 + 1)], 1e-7);
  const min = new EulerDiscreteScheduler({ ...SD15, final_sigmas_type: "sigma_min" });
  min.setTimesteps(10);
  assertClose([min.sigmas[10]], [sig(0)], 1e-6, "final sigma_min");
});

/** A perfect model's output for x = x0 + sigma * eps. */
function perfect(pred: string, x: Float32Array, x0: Float32Array, sigma: number): Float32Array {
  if (pred === "epsilon") return x.map((v, i) => (v - x0[i]) / sigma);
  if (pred === "v_prediction") {
    const s2 = sigma * sigma + 1;
    return x.map((v, i) => (v / s2 - x0[i]) * Math.sqrt(s2) / sigma);
  }
  return x0;
}

for (const pred of ["epsilon", "v_prediction", "sample"] as const) {
  Deno.test(`Euler with a perfect ${pred} model recovers x0`, () => {
    for (const karras of [false, true]) {
      const s = new EulerDiscreteScheduler({ ...SD15, prediction_type: pred, use_karras_sigmas: karras });
      s.setTimesteps(12);
      const rng = new Rng(4);
      const x0 = rng.normal(256);
      let x: Float32Array = rng.normal(256).map((v, i) => x0[i] + v * s.initNoiseSigma);
      s.timesteps.forEach((t, i) => {
        x = s.step(perfect(pred, x, x0, s.sigmas[i]), t, x);
      });
      const e = relativeError(x, x0);
      assert(e < 1e-5, `karras=${karras}: final vs x0 ${e}`);
    }
  });
}

Deno.test("Euler with Karras sigmas: from the largest to the smallest sigma, rho = 7 spacing", () => {
  const s = new EulerDiscreteScheduler({ ...SD15, use_karras_sigmas: true });
  s.setTimesteps(10);
  const plain = new EulerDiscreteScheduler(SD15);
  plain.setTimesteps(10);
  assertClose([s.sigmas[0], s.sigmas[9], s.sigmas[10]], [plain.sigmas[0], plain.sigmas[9], 0], 1e-6);
  const r = Array.from(s.sigmas.subarray(0, 10), (v) => v ** (1 / 7));
  for (let i = 1; i < 9; i++) assertClose([r[i + 1] - r[i]], [r[1] - r[0]], 1e-4, `rho spacing ${i}`);
  assertClose([s.timesteps[0], s.timesteps[9]], [999, 0], 1e-6);
  for (let i = 1; i < 10; i++) assert(s.timesteps[i] < s.timesteps[i - 1], "descending");
});

Deno.test("Euler: setBeginIndex and step position, errors", () => {
  const s = new EulerDiscreteScheduler(SD15);
  s.setTimesteps(10);
  s.setBeginIndex(4);
  const x = new Rng(1).normal(16);
  const d = Math.sqrt(s.sigmas[4] ** 2 + 1);
  assertClose(s.scaleModelInput(x, s.timesteps[4]), x.map((v) => v / d), 1e-7);
  const fresh = new EulerDiscreteScheduler(SD15);
  fresh.setTimesteps(10);
  assertThrows(() => fresh.scaleModelInput(x, 123), RangeError, "not one of");
  assertThrows(() => fresh.step(new Float32Array(3), 999, new Float32Array(4)), RangeError);
  const deterministic = () => {
    const e = new EulerDiscreteScheduler(SD15);
    e.setTimesteps(5);
    return e.step(x, 999, x);
  };
  assertEquals(deterministic(), deterministic());
});
