/**
 * DDPMScheduler tests: the training schedule against diffusers, and the ancestral step's mean and variance.
 */
import { Rng } from "../random.ts";
import { assert, assertClose, assertEquals, assertThrows, relativeError } from "../testing.ts";
import { DDPMScheduler } from "./ddpm.ts";
import { loadSchedulerReference, SD15 } from "./testing_reference.ts";

Deno.test("DDPM training schedule matches diffusers: alphas_cumprod, add_noise, get_velocity", async () => {
  const { io } = await loadSchedulerReference();
  const s = new DDPMScheduler(SD15);
  assertClose(s.alphasCumprod, io.float32("ddpm.alphas_cumprod"), 1e-6, "alphas_cumprod");
  const x0 = io.float32("ddpm.x0"), noise = io.float32("ddpm.noise");
  const ts = io.int("ddpm.t");
  const n = x0.length;
  ts.forEach((t, i) => {
    assertClose(
      s.addNoise(x0, noise, t),
      io.float32("ddpm.noisy").subarray(i * n, (i + 1) * n),
      1e-5,
      `noisy t=${t}`,
    );
    assertClose(
      s.getVelocity(x0, noise, t),
      io.float32("ddpm.velocity").subarray(i * n, (i + 1) * n),
      1e-5,
      `v t=${t}`,
    );
  });
});

Deno.test("DDPM: the last step returns the predicted x0 (no noise at t = 0)", () => {
  for (const pred of ["epsilon", "v_prediction", "sample"] as const) {
    const x = new Rng(1).normal(64), m = new Rng(2).normal(64);
    const s = new DDPMScheduler({
      ...SD15,
      prediction_type: pred,
      clip_sample: false,
      timestep_spacing: "linspace",
    });
    s.setTimesteps(10);
    assertEquals(s.timesteps[9], 0);
    const out = s.step(m, 0, x); // t = 0 draws nothing
    assertClose(out, s.predOriginalSample!, 1e-6, pred);
    // leading spacing ends at t = 1: diffusers still draws noise there, with std sqrt(1e-20)
    const lead = new DDPMScheduler({ ...SD15, prediction_type: pred, clip_sample: false });
    lead.setTimesteps(10);
    assertEquals(lead.previousTimestep(lead.timesteps[9]), -1);
    assertClose(lead.step(m, lead.timesteps[9], x, new Rng(3)), lead.predOriginalSample!, 1e-6, pred);
  }
});

Deno.test("DDPM: posterior mean and fixed_small variance", () => {
  const s = new DDPMScheduler({ ...SD15, clip_sample: false });
  s.setTimesteps(10);
  const t = s.timesteps[3], prev = s.timesteps[4];
  assertEquals(s.previousTimestep(t), prev);
  const a = s.alphasCumprod[t], ap = s.alphasCumprod[prev];
  const beta = 1 - a / ap;
  const n = 1 << 16;
  const x0 = new Rng(7).normal(n), eps = new Rng(8).normal(n);
  const x = x0.map((v, i) => Math.sqrt(a) * v + Math.sqrt(1 - a) * eps[i]);
  const out = s.step(eps, t, x, new Rng(9));
  assertClose(s.predOriginalSample!, x0, 1e-5, "x0 prediction");
  // q(x_prev | x_t, x0): mean sqrt(ap) beta / (1 - a) x0 + sqrt(a / ap) (1 - ap) / (1 - a) x_t
  const mean = x.map((v, i) =>
    Math.sqrt(ap) * beta / (1 - a) * x0[i] + Math.sqrt(a / ap) * (1 - ap) / (1 - a) * v
  );
  let sum = 0, sq = 0;
  for (let i = 0; i < n; i++) {
    const r = out[i] - mean[i];
    sum += r;
    sq += r * r;
  }
  const variance = (1 - ap) / (1 - a) * beta;
  assert(Math.abs(sum / n) < 4 * Math.sqrt(variance / n), `residual mean ${sum / n}`);
  assertClose([sq / n], [variance], 0.02, "residual variance");
});

Deno.test("DDPM: stochastic steps need an Rng and repeat with the same seed", () => {
  const x = new Rng(1).normal(64), m = new Rng(2).normal(64);
  const s = new DDPMScheduler(SD15);
  assertThrows(() => s.step(m, 500, x), Error, "needs an Rng");
  assertEquals(s.previousTimestep(500), 499, "before setTimesteps: the full chain");
  assertEquals(s.step(m, 500, x, new Rng(4)), s.step(m, 500, x, new Rng(4)));
  assert(relativeError(s.step(m, 500, x, new Rng(4)), s.step(m, 500, x, new Rng(5))) > 1e-4);
  const g = new DDPMScheduler(SD15, { generator: new Rng(4) });
  assertEquals(g.step(m, 500, x), s.step(m, 500, x, new Rng(4)), "options.generator");
  const large = new DDPMScheduler({ ...SD15, variance_type: "fixed_large" });
  assert(
    relativeError(large.step(m, 500, x, new Rng(4)), s.step(m, 500, x, new Rng(4))) > 0,
    "fixed_large differs",
  );
});
