/**
 * DDIM sampler (Song et al. 2020), diffusers' `DDIMScheduler`: deterministic with eta = 0 (the default), DDPM-like
 * noise with eta > 0 (then it needs an `Rng`). Works on integer training timesteps; the model input is not scaled.
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
  type NoiseScales,
  resolveSchedulerConfig,
  type Scheduler,
  type SchedulerConfig,
  type SchedulerConfigInput,
  type SchedulerName,
  type SchedulerOptions,
} from "./scheduler.ts";

const f32 = Math.fround;

/** diffusers `DDIMScheduler`. */
export class DDIMScheduler implements Scheduler {
  readonly name: SchedulerName = "ddim";
  readonly order = 1;
  readonly initNoiseSigma = 1;
  readonly config: Readonly<SchedulerConfig>;
  readonly betas: Float32Array;
  readonly alphasCumprod: Float32Array;
  /** alpha_cumprod after the last step: 1 with `set_alpha_to_one`, else alphas_cumprod[0]. */
  readonly finalAlphaCumprod: number;
  /** Noise weight (0 = DDIM). */
  readonly eta: number;
  private generator?: Rng;
  private _timesteps: number[];
  private _n = 0;
  private _pred: Float32Array | null = null;

  /** `config`: diffusers fields (missing ones take DDIMScheduler's defaults); `options.eta` defaults to 0. */
  constructor(config: SchedulerConfigInput = {}, options: SchedulerOptions = {}) {
    this.config = resolveSchedulerConfig("ddim", config);
    this.betas = betasFor(this.config);
    this.alphasCumprod = alphasCumprod(this.betas);
    this.finalAlphaCumprod = this.config.set_alpha_to_one ? 1 : this.alphasCumprod[0];
    this.eta = options.eta ?? 0;
    if (!(this.eta >= 0)) throw new RangeError(`eta ${this.eta} must be >= 0`);
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

  /** DDIM is stateless per step: every step finds its position from `t`. */
  setBeginIndex(_index: number): void {}

  scaleModelInput(sample: Float32Array, _t: number): Float32Array {
    return sample;
  }

  private alphaAt(t: number): number {
    if (!Number.isInteger(t) || t < 0 || t >= this.alphasCumprod.length) {
      throw new RangeError(`DDIM timestep ${t} must be an integer in [0, ${this.alphasCumprod.length - 1}]`);
    }
    return this.alphasCumprod[t];
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array, rng?: Rng): Float32Array {
    if (this._n === 0) throw new Error("DDIMScheduler.step: call setTimesteps first");
    checkStepInputs(modelOutput, sample);
    const c = this.config;
    const prevT = t - Math.floor(c.num_train_timesteps / this._n);
    const a = this.alphaAt(t);
    const aPrev = prevT >= 0 ? this.alphasCumprod[prevT] : this.finalAlphaCumprod;
    const b = f32(1 - a), bPrev = f32(1 - aPrev);
    const sa = f32(Math.sqrt(a)), sb = f32(Math.sqrt(b)), saPrev = f32(Math.sqrt(aPrev));
    const variance = f32(f32(bPrev / b) * f32(1 - f32(a / aPrev)));
    const std = f32(this.eta * f32(Math.sqrt(variance)));
    const dirCoef = f32(Math.sqrt(f32(f32(1 - aPrev) - f32(std * std))));
    const clip = c.clip_sample ? c.clip_sample_range : Infinity;
    const n = sample.length;
    const pred = new Float32Array(n);
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const x = sample[i], m = modelOutput[i];
      let x0: number, eps: number;
      if (c.prediction_type === "epsilon") {
        x0 = f32(f32(x - f32(sb * m)) / sa);
        eps = m;
      } else if (c.prediction_type === "v_prediction") {
        x0 = f32(f32(sa * x) - f32(sb * m));
        eps = f32(f32(sa * m) + f32(sb * x));
      } else {
        x0 = m;
        eps = f32(f32(x - f32(sa * x0)) / sb);
      }
      x0 = Math.min(Math.max(x0, -clip), clip);
      pred[i] = x0;
      out[i] = f32(saPrev * x0) + f32(dirCoef * eps);
    }
    if (this.eta > 0) {
      const g = rng ?? this.generator;
      if (!g) {
        throw new Error("DDIMScheduler.step with eta > 0 needs an Rng (step argument or options.generator)");
      }
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

  addNoise(x0: Float32Array, noise: Float32Array, t: number): Float32Array {
    return addNoise(this.alphasCumprod, x0, noise, t);
  }
}
