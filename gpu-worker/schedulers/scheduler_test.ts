/**
 * Tests of the shared scheduler pieces: betas and alphas_cumprod (closed form and against diffusers), the
 * training noise (add_noise, get_velocity against diffusers), config parsing, the factory and img2img's start.
 */
import { Rng } from "../random.ts";
import { assert, assertClose, assertEquals, assertThrows, relativeError } from "../testing.ts";
import { DDIMScheduler } from "./ddim.ts";
import { DPMSolverMultistepScheduler } from "./dpm_solver_multistep.ts";
import { EulerDiscreteScheduler } from "./euler_discrete.ts";
import {
  addNoise,
  alphasCumprod,
  betasFor,
  createScheduler,
  getVelocity,
  npArange,
  npLinspace,
  parseSchedulerConfigJson,
  resolveSchedulerConfig,
  roundHalfEven,
  SCHEDULER_NAMES,
  schedulerNameForClass,
  timestepsForStrength,
} from "./scheduler.ts";
import { loadSchedulerReference } from "./testing_reference.ts";

const SD15 = { beta_schedule: "scaled_linear", beta_start: 0.00085, beta_end: 0.012 } as const;

/** SD 1.5's scheduler_config.json as the model repositories ship it. */
const SD15_FILE = {
  _class_name: "PNDMScheduler",
  _diffusers_version: "0.6.0",
  beta_end: 0.012,
  beta_schedule: "scaled_linear",
  beta_start: 0.00085,
  num_train_timesteps: 1000,
  set_alpha_to_one: false,
  skip_prk_steps: true,
  steps_offset: 1,
  trained_betas: null,
  clip_sample: false,
};

Deno.test("betasFor: schedule endpoints in closed form", () => {
  const scaled = betasFor(SD15);
  assertEquals(scaled.length, 1000);
  assertClose([scaled[0], scaled[999]], [0.00085, 0.012], 1e-6, "scaled_linear ends");
  // scaled_linear is linear in sqrt(beta)
  assertClose([Math.sqrt(scaled[500]) - Math.sqrt(scaled[499])], [
    (Math.sqrt(0.012) - Math.sqrt(0.00085)) / 999,
  ], 1e-4);
  const linear = betasFor({
    beta_schedule: "linear",
    beta_start: 0.0001,
    beta_end: 0.02,
    num_train_timesteps: 1000,
  });
  assertClose(
    [linear[0], linear[999], linear[500] - linear[499]],
    [0.0001, 0.02, 0.0199 / 999],
    1e-4,
    "linear",
  );
  const cos = betasFor({ beta_schedule: "squaredcos_cap_v2", num_train_timesteps: 1000 });
  assert(cos.every((b) => b > 0 && b <= Math.fround(0.999)), "cosine betas in (0, 0.999]");
  assertClose([cos[999]], [0.999], 1e-7, "cosine beta capped at the end");
  const acpCos = alphasCumprod(cos);
  const f = (t: number) => Math.cos((t + 0.008) / 1.008 * Math.PI / 2) ** 2;
  assertClose([acpCos[499]], [f(0.5) / f(0)], 1e-5, "cosine alphas_cumprod follows alpha_bar");
  const trained = betasFor({ trained_betas: [0.1, 0.2, 0.3] });
  assertClose(trained, [0.1, 0.2, 0.3], 1e-7, "trained_betas");
});

Deno.test("alphasCumprod: monotone in (0, 1) and equal to diffusers'", async () => {
  const ref = await loadSchedulerReference();
  const acp = alphasCumprod(betasFor(SD15));
  for (let i = 1; i < acp.length; i++) assert(acp[i] < acp[i - 1], `decreasing at ${i}`);
  assert(acp[0] < 1 && acp[999] > 0);
  assertClose([acp[0]], [1 - 0.00085], 1e-7, "first alpha");
  const err = relativeError(acp, ref.io.float32("ddpm.alphas_cumprod"));
  assert(err < 1e-6, `alphas_cumprod relative error ${err}`);
  // zero terminal SNR rescale: last alpha_cumprod is 0, first unchanged
  const z = alphasCumprod(betasFor({ ...SD15, rescale_betas_zero_snr: true }));
  assertClose([z[0]], [acp[0]], 1e-6, "rescaled first");
  assert(Math.abs(z[999]) < 1e-12, `rescaled last ${z[999]}`);
});

Deno.test("addNoise and getVelocity match diffusers' DDPMScheduler at t = 0, 250, 999", async () => {
  const { io } = await loadSchedulerReference();
  const acp = alphasCumprod(betasFor(SD15));
  const x0 = io.float32("ddpm.x0"), noise = io.float32("ddpm.noise");
  const ts = io.int("ddpm.t");
  const noisy = io.float32("ddpm.noisy"), velocity = io.float32("ddpm.velocity");
  const n = x0.length;
  let worst = 0;
  ts.forEach((t, i) => {
    for (
      const [got, want] of [
        [addNoise(acp, x0, noise, t), noisy.subarray(i * n, (i + 1) * n)],
        [getVelocity(acp, x0, noise, t), velocity.subarray(i * n, (i + 1) * n)],
      ]
    ) {
      const e = relativeError(got, want);
      worst = Math.max(worst, e);
      assert(e < 1e-5, `t=${t}: relative error ${e}`);
    }
  });
  // one timestep per batch item
  const batch = new Float32Array(3 * n), batchNoise = new Float32Array(3 * n);
  for (let i = 0; i < 3; i++) {
    batch.set(x0, i * n);
    batchNoise.set(noise, i * n);
  }
  assertClose(addNoise(acp, batch, batchNoise, ts), noisy, 1e-5, "batched add_noise");
  assertClose(getVelocity(acp, batch, batchNoise, ts), velocity, 1e-5, "batched get_velocity");
  assertThrows(() => addNoise(acp, x0, noise, 1000), RangeError, "training timestep");
  assertThrows(() => addNoise(acp, x0, noise, 2.5), RangeError);
  assertThrows(() => addNoise(acp, x0, noise, [1, 2, 3]), RangeError, "equal items");
  console.log(`add_noise/get_velocity: max relative error ${worst.toExponential(2)}`);
});

Deno.test("getVelocity: x0 and noise come back from (x_t, v)", () => {
  const acp = alphasCumprod(betasFor(SD15));
  const rng = new Rng(3);
  const x0 = rng.normal(256), noise = rng.normal(256);
  for (const t of [0, 400, 999]) {
    const xt = addNoise(acp, x0, noise, t), v = getVelocity(acp, x0, noise, t);
    const a = Math.sqrt(acp[t]), s = Math.sqrt(1 - acp[t]);
    assertClose(xt.map((x, i) => a * x - s * v[i]), x0, 1e-5, `x0 at ${t}`);
    assertClose(xt.map((x, i) => s * x + a * v[i]), noise, 1e-5, `noise at ${t}`);
  }
});

Deno.test("numpy helpers: round half to even, linspace, arange", () => {
  assertEquals([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4, 2.6].map(roundHalfEven), [0, 2, 2, -0, -2, -2, 2, 3]);
  assertEquals(npLinspace(0, 999, 4), [0, 333, 666, 999]);
  assertEquals(npArange(1000, 0, -250), [1000, 750, 500, 250]);
  assertEquals(npArange(0, 1, 2), [0]);
});

Deno.test("parseSchedulerConfigJson reads Python's -Infinity/NaN tokens, not inside strings", () => {
  const c = parseSchedulerConfigJson(
    '{"a": -Infinity, "b": [NaN, Infinity], "c": "-Infinity \\" NaN", "d": 1}',
  );
  assertEquals(c.a, -Infinity);
  assert(Number.isNaN((c.b as number[])[0]) && (c.b as number[])[1] === Infinity);
  assertEquals(c.c, '-Infinity " NaN');
  assertEquals(c.d, 1);
  assertThrows(() => parseSchedulerConfigJson("[1]"), TypeError);
});

Deno.test("resolveSchedulerConfig: per-sampler defaults and clear errors", () => {
  assertEquals(resolveSchedulerConfig("ddim").timestep_spacing, "leading");
  assertEquals(resolveSchedulerConfig("euler").timestep_spacing, "linspace");
  assertEquals(resolveSchedulerConfig("ddpm").variance_type, "fixed_small");
  assertEquals(
    resolveSchedulerConfig("dpmpp_2m", { lambda_min_clipped: "-inf" }).lambda_min_clipped,
    -Infinity,
  );
  assertEquals(resolveSchedulerConfig("dpmpp_2m", { algorithm_type: "deis" }).algorithm_type, "dpmsolver++");
  assertThrows(
    () => resolveSchedulerConfig("ddim", { beta_schedule: "cubic" }),
    RangeError,
    "Should be one of: linear",
  );
  assertThrows(
    () => resolveSchedulerConfig("ddim", { prediction_type: "flow" }),
    RangeError,
    "prediction_type",
  );
  assertThrows(() => resolveSchedulerConfig("ddim", { thresholding: true }), RangeError, "thresholding");
  assertThrows(() => resolveSchedulerConfig("euler", { use_exponential_sigmas: true }), RangeError);
  assertThrows(() => resolveSchedulerConfig("dpmpp_2m", { algorithm_type: "sde-dpmsolver++" }), RangeError);
  assertThrows(() => resolveSchedulerConfig("ddpm", { variance_type: "learned_range" }), RangeError);
  assertThrows(() => resolveSchedulerConfig("ddim", { num_train_timesteps: 0 }), RangeError);
  // fields a sampler does not read are ignored, whatever their value
  const sde = { algorithm_type: "sde-dpmsolver++", use_lu_lambdas: true, variance_type: "learned_range" };
  assertEquals(resolveSchedulerConfig("ddim", sde).algorithm_type, "dpmsolver++");
  assertEquals(resolveSchedulerConfig("euler_a", { use_karras_sigmas: true }).use_karras_sigmas, false);
});

Deno.test("createScheduler: class names, SD 1.5's PNDM fallback, overrides, unknown names", () => {
  const fallback = createScheduler(SD15_FILE);
  assertEquals(fallback.name, "ddim");
  assert(fallback instanceof DDIMScheduler);
  assertEquals(fallback.config.set_alpha_to_one, false);
  assertEquals(fallback.config.steps_offset, 1);
  assertClose(fallback.alphasCumprod, alphasCumprod(betasFor(SD15)), 0, "same betas");
  fallback.setTimesteps(10);
  assertEquals(fallback.timesteps, [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]);
  assertThrows(() => fallback.timesteps.push(0), TypeError);

  for (const name of SCHEDULER_NAMES) {
    const s = createScheduler(SD15_FILE, { name });
    assertEquals(s.name, name);
    assertEquals(createScheduler({ ...SD15_FILE, _class_name: s.constructor.name }).name, name);
  }
  assertEquals(schedulerNameForClass("LMSDiscreteScheduler"), "ddim");
  assertEquals(schedulerNameForClass(undefined), "ddim");
  const euler = createScheduler(SD15_FILE, { name: "euler" });
  assert(euler instanceof EulerDiscreteScheduler);
  assertEquals(euler.config.timestep_spacing, "linspace", "missing keys take the sampler's defaults");

  const e = assertThrows(
    () => createScheduler(SD15_FILE, { name: "heun" }),
    RangeError,
    "Should be one of: ",
  );
  for (const name of SCHEDULER_NAMES) assert(e.message.includes(name), `error lists ${name}`);
  assert(e.message.includes('"heun"'), "error names the bad one");
});

Deno.test("timestepsForStrength: diffusers' get_timesteps and the noise level at the start", () => {
  const ddim = createScheduler(SD15_FILE);
  assertThrows(() => timestepsForStrength(ddim, 0.5), RangeError, "setTimesteps");
  ddim.setTimesteps(10);
  const start = timestepsForStrength(ddim, 0.75); // init_timestep = int(7.5) = 7, t_start = 3
  assertEquals(start.startIndex, 3);
  assertEquals(start.timesteps, [601, 501, 401, 301, 201, 101, 1]);
  const a = ddim.alphasCumprod[601];
  assertClose([start.noiseScales.signal, start.noiseScales.noise], [Math.sqrt(a), Math.sqrt(1 - a)], 1e-7);
  assertEquals(timestepsForStrength(ddim, 1).timesteps.length, 10);
  assertThrows(() => timestepsForStrength(ddim, 0.05), RangeError, "no denoising step");
  assertThrows(() => timestepsForStrength(ddim, 1.5), RangeError, "[0, 1]");

  // Sigma samplers: the begin index fixes the position, addNoise uses sigma there (x0 + sigma * noise).
  const euler = createScheduler(SD15_FILE, { name: "euler" }) as EulerDiscreteScheduler;
  euler.setTimesteps(10);
  const es = timestepsForStrength(euler, 0.5);
  assertEquals(es.startIndex, 5);
  assertEquals(es.noiseScales, { signal: 1, noise: euler.sigmas[5] });
  const rng = new Rng(1);
  const x0 = rng.normal(64), noise = rng.normal(64);
  const noisy = euler.addNoise(x0, noise, es.timesteps[0]);
  assertClose(noisy, x0.map((x, i) => x + euler.sigmas[5] * noise[i]), 1e-7);
  const d = Math.sqrt(euler.sigmas[5] ** 2 + 1);
  assertClose(
    euler.scaleModelInput(noisy, es.timesteps[0]),
    noisy.map((x) => x / d),
    1e-7,
    "scaled at sigma[5]",
  );

  const dpm = createScheduler(SD15_FILE, { name: "dpmpp_2m" }) as DPMSolverMultistepScheduler;
  dpm.setTimesteps(10);
  const ds = timestepsForStrength(dpm, 0.3);
  assertEquals(ds.startIndex, 7);
  const s = dpm.sigmas[7], alpha = 1 / Math.sqrt(s * s + 1);
  assertClose([ds.noiseScales.signal, ds.noiseScales.noise], [alpha, s * alpha], 1e-6);
  assertClose([ds.noiseScales.signal ** 2], [dpm.alphasCumprod[ds.timesteps[0]]], 1e-6, "VP signal level");
});
