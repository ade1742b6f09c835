/**
 * DPM-Solver++ multistep sampler (Lu et al. 2022), diffusers' `DPMSolverMultistepScheduler` with
 * `algorithm_type: "dpmsolver++"`: converts each model output to a predicted x0 and takes exponential-integrator
 * steps in lambda = log(alpha / sigma), second order (midpoint, or heun) from the second step on, first order on
 * the final step (`lower_order_final`, and always with `final_sigmas_type: "zero"`). Deterministic; the sample is
 * at unit scale (`initNoiseSigma` 1). Orders 1-3 and Karras sigmas are supported.
 */
import type { Rng } from "../random.ts";
import { SigmaScheduler } from "./base.ts";
import {
  checkStepInputs,
  checkSteps,
  indexForTimestep,
  karrasSigmas,
  type NoiseScales,
  npArange,
  npLinspace,
  roundHalfEven,
  type Scheduler,
  type SchedulerConfigInput,
  type SchedulerOptions,
  sigmaToT,
} from "./core.ts";

const f32 = Math.fround;

/** alpha_t = 1 / sqrt(sigma^2 + 1), sigma_t = sigma * alpha_t, lambda = log(alpha_t) - log(sigma_t) (float32). */
function alphaSigmaLambda(sigma: number): { alpha: number; sigma: number; lambda: number } {
  const alpha = f32(1 / f32(Math.sqrt(f32(f32(sigma * sigma) + 1))));
  const s = f32(sigma * alpha);
  return { alpha, sigma: s, lambda: f32(f32(Math.log(alpha)) - f32(Math.log(s))) };
}

/** diffusers `DPMSolverMultistepScheduler` (dpmsolver++). */
export class DPMSolverMultistepScheduler extends SigmaScheduler implements Scheduler {
  readonly initNoiseSigma = 1;
  /** lambda(t) = log(alpha_t / sigma_t) of every training timestep, float32. */
  readonly trainLambdas: Float32Array;
  private modelOutputs: (Float32Array | null)[] = [];
  private lowerOrderNums = 0;

  /** `config`: diffusers fields (missing ones take DPMSolverMultistepScheduler's defaults). No randomness used. */
  constructor(config: SchedulerConfigInput = {}, options: SchedulerOptions = {}) {
    super("dpmpp_2m", config, options);
    this.trainLambdas = this.alphasCumprod.map((a) =>
      f32(f32(Math.log(f32(Math.sqrt(a)))) - f32(Math.log(f32(Math.sqrt(f32(1 - a))))))
    );
  }

  setTimesteps(n: number): void {
    const c = this.config;
    const N = c.num_train_timesteps;
    checkSteps(n, N);
    // First index of the ascending lambdas at or above lambda_min_clipped (searchsorted, left).
    const ascending = [...this.trainLambdas].reverse();
    let clipped = ascending.findIndex((l) => l >= c.lambda_min_clipped);
    if (clipped < 0) clipped = ascending.length;
    const lastTimestep = N - clipped;
    let timesteps: number[];
    if (c.timestep_spacing === "linspace") {
      timesteps = npLinspace(0, lastTimestep - 1, n + 1).map(roundHalfEven).reverse().slice(0, n);
    } else if (c.timestep_spacing === "leading") {
      const ratio = Math.floor(lastTimestep / (n + 1));
      timesteps = Array.from({ length: n }, (_, i) => (n - i) * ratio + c.steps_offset);
    } else {
      timesteps = npArange(lastTimestep, 0, -N / n).map((v) => roundHalfEven(v) - 1);
    }
    let sigmas: number[];
    if (c.use_karras_sigmas) {
      const logSigmas = this.trainSigmas.map(Math.log);
      sigmas = karrasSigmas(this.trainSigmas[0], this.trainSigmas[N - 1], n);
      timesteps = sigmas.map((s) => {
        const t = sigmaToT(s, logSigmas);
        return c.beta_schedule === "squaredcos_cap_v2" ? Math.trunc(t) : roundHalfEven(t);
      });
    } else {
      sigmas = timesteps.map((t) => this.trainSigmas[t]);
    }
    const last = c.final_sigmas_type === "zero" ? 0 : this.trainSigmas[0];
    this.modelOutputs = new Array(c.solver_order).fill(null);
    this.lowerOrderNums = 0;
    this.setSchedule(timesteps.length, timesteps, [...sigmas, last]);
  }

  /** A `t` not in the timesteps starts at the last one (diffusers' fallback). */
  protected override indexOf(t: number): number {
    return indexForTimestep(this._timesteps, t, this._timesteps.length - 1);
  }

  scaleModelInput(sample: Float32Array, _t: number): Float32Array {
    return sample;
  }

  /** The model output as a predicted x0 at the current sigma. */
  private toX0(modelOutput: Float32Array, sample: Float32Array, sigma: number): Float32Array {
    const { alpha, sigma: s } = alphaSigmaLambda(sigma);
    const pt = this.config.prediction_type;
    const out = new Float32Array(sample.length);
    for (let i = 0; i < sample.length; i++) {
      const x = sample[i], m = modelOutput[i];
      if (pt === "epsilon") out[i] = f32(x - f32(s * m)) / alpha;
      else if (pt === "v_prediction") out[i] = f32(alpha * x) - f32(s * m);
      else out[i] = m;
    }
    return out;
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array, _rng?: Rng): Float32Array {
    this.requireTimesteps("step");
    checkStepInputs(modelOutput, sample);
    const c = this.config;
    const i = this.stepPosition(t);
    const len = this._timesteps.length;
    const lowerOrderFinal = i === len - 1 &&
      (c.euler_at_final || (c.lower_order_final && len < 15) || c.final_sigmas_type === "zero");
    const lowerOrderSecond = i === len - 2 && c.lower_order_final && len < 15;

    const x0 = this.toX0(modelOutput, sample, this._sigmas[i]);
    this.modelOutputs.shift();
    this.modelOutputs.push(x0);

    let out: Float32Array;
    if (c.solver_order === 1 || this.lowerOrderNums < 1 || lowerOrderFinal) out = this.firstOrder(i, sample);
    else if (c.solver_order === 2 || this.lowerOrderNums < 2 || lowerOrderSecond) {
      out = this.secondOrder(i, sample);
    } else out = this.thirdOrder(i, sample);

    if (this.lowerOrderNums < c.solver_order) this.lowerOrderNums++;
    this.stepIndex = i + 1;
    this._pred = x0;
    return out;
  }

  private output(k: number): Float32Array {
    return this.modelOutputs[this.modelOutputs.length - 1 - k] as Float32Array;
  }

  private firstOrder(i: number, x: Float32Array): Float32Array {
    const t = alphaSigmaLambda(this._sigmas[i + 1]), s = alphaSigmaLambda(this._sigmas[i]);
    const h = f32(t.lambda - s.lambda);
    const cx = f32(t.sigma / s.sigma);
    const cd = f32(t.alpha * f32(f32(Math.exp(-h)) - 1));
    const d0 = this.output(0);
    const out = new Float32Array(x.length);
    for (let k = 0; k < x.length; k++) out[k] = f32(cx * x[k]) - f32(cd * d0[k]);
    return out;
  }

  private secondOrder(i: number, x: Float32Array): Float32Array {
    const t = alphaSigmaLambda(this._sigmas[i + 1]);
    const s0 = alphaSigmaLambda(this._sigmas[i]), s1 = alphaSigmaLambda(this._sigmas[i - 1]);
    const h = f32(t.lambda - s0.lambda), h0 = f32(s0.lambda - s1.lambda);
    const r0 = f32(h0 / h);
    const inv = f32(1 / r0);
    const em1 = f32(f32(Math.exp(-h)) - 1);
    const cx = f32(t.sigma / s0.sigma);
    const c0 = f32(t.alpha * em1);
    // midpoint: - 0.5 * alpha_t (e^-h - 1) D1; heun: + alpha_t ((e^-h - 1) / h + 1) D1
    const c1 = this.config.solver_type === "midpoint" ? -f32(0.5 * c0) : f32(t.alpha * f32(f32(em1 / h) + 1));
    const m0 = this.output(0), m1 = this.output(1);
    const out = new Float32Array(x.length);
    for (let k = 0; k < x.length; k++) {
      const d1 = f32(inv * f32(m0[k] - m1[k]));
      out[k] = f32(f32(cx * x[k]) - f32(c0 * m0[k])) + f32(c1 * d1);
    }
    return out;
  }

  private thirdOrder(i: number, x: Float32Array): Float32Array {
    const t = alphaSigmaLambda(this._sigmas[i + 1]);
    const s0 = alphaSigmaLambda(this._sigmas[i]);
    const s1 = alphaSigmaLambda(this._sigmas[i - 1]);
    const s2 = alphaSigmaLambda(this._sigmas[i - 2]);
    const h = f32(t.lambda - s0.lambda), h0 = f32(s0.lambda - s1.lambda), h1 = f32(s1.lambda - s2.lambda);
    const r0 = f32(h0 / h), r1 = f32(h1 / h);
    const inv0 = f32(1 / r0), inv1 = f32(1 / r1);
    const w = f32(r0 / f32(r0 + r1)), inv01 = f32(1 / f32(r0 + r1));
    const em1 = f32(f32(Math.exp(-h)) - 1);
    const cx = f32(t.sigma / s0.sigma);
    const c0 = f32(t.alpha * em1);
    const c1 = f32(t.alpha * f32(f32(em1 / h) + 1));
    const c2 = f32(t.alpha * f32(f32(f32(em1 + h) / f32(h * h)) - 0.5));
    const m0 = this.output(0), m1 = this.output(1), m2 = this.output(2);
    const out = new Float32Array(x.length);
    for (let k = 0; k < x.length; k++) {
      const d10 = f32(inv0 * f32(m0[k] - m1[k])), d11 = f32(inv1 * f32(m1[k] - m2[k]));
      const d1 = f32(d10 + f32(w * f32(d10 - d11)));
      const d2 = f32(inv01 * f32(d10 - d11));
      out[k] = f32(f32(f32(cx * x[k]) - f32(c0 * m0[k])) + f32(c1 * d1)) - f32(c2 * d2);
    }
    return out;
  }

  /** Unit-scale sample: alpha_t * x0 + sigma_t * noise. */
  protected scalesAt(sigma: number): NoiseScales {
    const { alpha, sigma: s } = alphaSigmaLambda(sigma);
    return { signal: alpha, noise: s };
  }

  /** img2img noise at `t`: alpha_t * x0 + sigma_t * noise (unit-scale sample, as these steps expect). */
  override addNoise(x0: Float32Array, noise: Float32Array, t: number): Float32Array {
    this.requireTimesteps("addNoise");
    return super.addNoise(x0, noise, t);
  }
}
