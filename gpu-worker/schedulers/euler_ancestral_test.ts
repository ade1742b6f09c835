/**
 * EulerAncestralDiscreteScheduler tests: every step against diffusers' chain (the project's fixture, each step
 * fed the noise diffusers drew), seeded determinism, the sigma_up/sigma_down split, and the schedule it shares
 * with diffusers' Euler.
 */
import { Rng } from "../random.ts";
import { assert, assertClose, assertEquals, assertThrows, relativeError } from "../testing.ts";
import { EulerAncestralDiscreteScheduler } from "./euler_ancestral.ts";
import { EulerDiscreteScheduler } from "./euler_discrete.ts";
import { createScheduler } from "./scheduler.ts";
import {
  assertChainMatches,
  loadEulerAncestralReference,
  loadSchedulerReference,
  SD15,
} from "./testing_reference.ts";

for (const pred of ["epsilon", "v_prediction"]) {
  Deno.test(`Euler ancestral matches diffusers (${pred}): timesteps, scaled inputs, every step given its noise`, async () => {
    const ref = await loadEulerAncestralReference();
    const key = `euler_a.${pred}`;
    assertEquals(ref.configs[key].prediction_type, pred);
    assertChainMatches(ref, key, new EulerAncestralDiscreteScheduler(ref.configs[key]));
  });
}

function chain(seed: number, viaOptions = false): Float32Array {
  const s = new EulerAncestralDiscreteScheduler(SD15, viaOptions ? { generator: new Rng(seed) } : {});
  s.setTimesteps(8);
  const rng = new Rng(seed);
  let x: Float32Array = new Rng(100).normal(64).map((v) => v * s.initNoiseSigma);
  s.timesteps.forEach((t, i) => {
    const m = new Rng(200 + i).normal(64);
    s.scaleModelInput(x, t);
    x = viaOptions ? s.step(m, t, x) : s.step(m, t, x, rng);
  });
  return x;
}

Deno.test("Euler ancestral: same seed same chain, other seed other chain", () => {
  const a = chain(42), b = chain(42), c = chain(43);
  assertEquals(a, b);
  assert(relativeError(a, c) > 1e-3, "another seed changes the sample");
  assertEquals(chain(42, true), a, "options.generator is the same stream as a step argument");
});

Deno.test("Euler ancestral: needs an Rng", () => {
  const s = new EulerAncestralDiscreteScheduler(SD15);
  s.setTimesteps(4);
  const x = new Float32Array(8);
  assertThrows(() => s.step(x, s.timesteps[0], x), Error, "needs an Rng");
  assertEquals(createScheduler({ ...SD15, _class_name: "EulerAncestralDiscreteScheduler" }).name, "euler_a");
});

Deno.test("Euler ancestral: schedule equals diffusers' Euler schedule", async () => {
  const ref = await loadSchedulerReference();
  const cfg = ref.configs["euler.epsilon"];
  const a = new EulerAncestralDiscreteScheduler(cfg), e = new EulerDiscreteScheduler(cfg);
  a.setTimesteps(10);
  e.setTimesteps(10);
  assertEquals(a.timesteps.map(Math.trunc), ref.io.int("euler.epsilon.timesteps"));
  assertEquals(a.sigmas, e.sigmas);
  assertEquals(a.initNoiseSigma, e.initNoiseSigma);
  const x = new Rng(1).normal(16);
  assertEquals(a.scaleModelInput(x, 999), e.scaleModelInput(x, 999));
});

Deno.test("Euler ancestral: steps to sigma_down then adds sigma_up noise, sigma_down^2 + sigma_up^2 = sigma_next^2", () => {
  const s = new EulerAncestralDiscreteScheduler(SD15);
  s.setTimesteps(10);
  const n = 1 << 16;
  const i = 3;
  for (let k = 0; k < i; k++) s.step(new Float32Array(4), s.timesteps[k], new Float32Array(4), new Rng(k));
  const sigma = s.sigmas[i], next = s.sigmas[i + 1];
  // x0 = 0, x = sigma * eps, perfect epsilon model: the deterministic part is sigma_down * eps
  const eps = new Rng(5).normal(n);
  const noise = new Rng(6).normal(n);
  const out = s.step(eps, s.timesteps[i], eps.map((e) => sigma * e), new Rng(6));
  const up = Math.sqrt(next ** 2 * (sigma ** 2 - next ** 2) / sigma ** 2);
  const down = Math.sqrt(next ** 2 - up ** 2);
  assertClose(out, eps.map((e, k) => down * e + up * noise[k]), 1e-6, "prev = sigma_down eps + sigma_up z");
  const variance = out.reduce((a, v) => a + v * v, 0) / n;
  assertClose([variance], [next ** 2], 0.02, "marginal variance sigma_next^2");
});

Deno.test("Euler ancestral: the final step (sigma 0) returns the predicted x0, any prediction type", () => {
  for (const pred of ["epsilon", "v_prediction", "sample"] as const) {
    const s = new EulerAncestralDiscreteScheduler({ ...SD15, prediction_type: pred });
    s.setTimesteps(5);
    s.setBeginIndex(4);
    const x = new Rng(1).normal(64), m = new Rng(2).normal(64);
    const out = s.step(m, s.timesteps[4], x, new Rng(3));
    assertClose(out, s.predOriginalSample!, 1e-6, pred);
  }
});
