/**
 * DDPM (Ho et al. 2020), diffusers' `DDPMScheduler`: the training noise schedule (`addNoise`, `getVelocity`,
 * the loss targets of epsilon and v-prediction training) and ancestral sampling with the posterior variance
 * (`fixed_small` by default). Sampling draws noise on every step but the last, so `step` needs an `Rng`.
 */
import type { Rng } from "../random.ts";
import {
  addNoise,
  alphasCumprod,
  betasFor,
  checkStepInputs,
  checkSteps,
  discreteTimesteps,
  frozen,
  getVelocity,
  type NoiseScales,
  resolveSchedulerConfig,
  type Scheduler,
  type SchedulerConfig,
  type SchedulerConfigInput,
  type SchedulerName,
  type SchedulerOptions,
} from "./scheduler.ts";

const f32 = Math.fround;

/** diffusers `DDPMScheduler`. */
export class DDPMScheduler implements Scheduler {
  readonly name: SchedulerName = "ddpm";
  readonly order = 1;
  readonly initNoiseSigma = 1;
  readonly config: Readonly<SchedulerConfig>;
  readonly betas: Float32Array;
  readonly alphasCumprod: Float32Array;
  private generator?: Rng;
  private _timesteps: number[];
  private _n = 0;
  private _pred: Float32Array | null = null;

  /** `config`: diffusers fields (missing ones take DDPMScheduler's defaults). */
  constructor(config: SchedulerConfigInput = {}, options: SchedulerOptions = {}) {
    this.config = resolveSchedulerConfig("ddpm", config);
    this.betas = betasFor(this.config);
    this.alphasCumprod = alphasCumprod(this.betas);
    this.generator = options.generator;
    this._timesteps = frozen(Array.from(
      { length: this.config.num_train_timesteps },
      (_, i) => this.config.num_train_timesteps - 1 - i,
    ));
  }

  /** Frozen: copy it before changing it. */
  get timesteps(): number[] {
    return this._timesteps;
  }

  get numInferenceSteps(): number {
    return this._n;
  }

  get predOriginalSample(): Float32Array | null {
    return this._pred;
  }

  setTimesteps(n: number): void {
    checkSteps(n, this.config.num_train_timesteps);
    this._n = n;
    this._timesteps = frozen(discreteTimesteps(this.config, n));
    this._pred = null;
  }

  /** DDPM is stateless per step: every step finds its position from `t`. */
  setBeginIndex(_index: number): void {}

  scaleModelInput(sample: Float32Array, _t: number): Float32Array {
    return sample;
  }

  private alphaAt(t: number): number {
    if (!Number.isInteger(t) || t < 0 || t >= this.alphasCumprod.length) {
      throw new RangeError(`DDPM timestep ${t} must be an integer in [0, ${this.alphasCumprod.length - 1}]`);
    }
    return this.alphasCumprod[t];
  }

  /** The timestep after `t` in the chain (-1 after the last); t - 1 before `setTimesteps`. */
  previousTimestep(t: number): number {
    if (this._n === 0) return t - 1;
    const i = this._timesteps.indexOf(t);
    if (i < 0) throw new RangeError(`timestep ${t} is not one of this scheduler's timesteps`);
    return i === this._timesteps.length - 1 ? -1 : this._timesteps[i + 1];
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array, rng?: Rng): Float32Array {
    checkStepInputs(modelOutput, sample);
    const c = this.config;
    const a = this.alphaAt(t);
    const prevT = this.previousTimestep(t);
    const aPrev = prevT >= 0 ? this.alphasCumprod[prevT] : 1;
    const b = f32(1 - a), bPrev = f32(1 - aPrev);
    const curAlpha = f32(a / aPrev), curBeta = f32(1 - curAlpha);
    const sa = f32(Math.sqrt(a)), sb = f32(Math.sqrt(b));
    const x0Coef = f32(f32(f32(Math.sqrt(aPrev)) * curBeta) / b);
    const xCoef = f32(f32(f32(Math.sqrt(curAlpha)) * bPrev) / b);
    const clip = c.clip_sample ? c.clip_sample_range : Infinity;
    const n = sample.length;
    const pred = new Float32Array(n);
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const x = sample[i], m = modelOutput[i];
      let x0: number;
      if (c.prediction_type === "epsilon") x0 = f32(f32(x - f32(sb * m)) / sa);
      else if (c.prediction_type === "v_prediction") x0 = f32(f32(sa * x) - f32(sb * m));
      else x0 = m;
      x0 = Math.min(Math.max(x0, -clip), clip);
      pred[i] = x0;
      out[i] = f32(x0Coef * x0) + f32(xCoef * x);
    }
    if (t > 0) {
      const g = rng ?? this.generator;
      if (!g) throw new Error("DDPMScheduler.step needs an Rng (step argument or options.generator)");
      const variance = Math.max(f32(f32(bPrev / b) * curBeta), 1e-20);
      let std: number;
      if (c.variance_type === "fixed_small") std = f32(Math.sqrt(variance));
      else if (c.variance_type === "fixed_small_log") std = f32(Math.exp(0.5 * f32(Math.log(variance))));
      else std = f32(Math.sqrt(curBeta));
      const noise = g.normal(n);
      for (let i = 0; i < n; i++) out[i] += f32(std * noise[i]);
    }
    this._pred = pred;
    return out;
  }

  noiseScales(t: number): NoiseScales {
    const a = this.alphaAt(t);
    return { signal: f32(Math.sqrt(a)), noise: f32(Math.sqrt(f32(1 - a))) };
  }

  /** Training noise: sqrt(acp[t]) * x0 + sqrt(1 - acp[t]) * noise (one `t`, or one per batch item). */
  addNoise(x0: Float32Array, noise: Float32Array, t: number | readonly number[]): Float32Array {
    return addNoise(this.alphasCumprod, x0, noise, t);
  }

  /** v-prediction target: sqrt(acp[t]) * noise - sqrt(1 - acp[t]) * x0 (one `t`, or one per batch item). */
  getVelocity(x0: Float32Array, noise: Float32Array, t: number | readonly number[]): Float32Array {
    return getVelocity(this.alphasCumprod, x0, noise, t);
  }
}
