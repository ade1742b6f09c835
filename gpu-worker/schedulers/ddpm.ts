/**
 * DDPM (Ho et al. 2020), diffusers' `DDPMScheduler`: the training noise schedule (`addNoise`, `getVelocity`,
 * the loss targets of epsilon and v-prediction training) and ancestral sampling with the posterior variance
 * (`fixed_small` by default). Sampling draws noise on every step but the last, so `step` needs an `Rng`.
 */
import type { Rng } from "../random.ts";
import { AlphaScheduler } from "./base.ts";
import {
  addNoise,
  checkStepInputs,
  getVelocity,
  type Scheduler,
  type SchedulerConfigInput,
  type SchedulerOptions,
} from "./core.ts";

const f32 = Math.fround;

/** diffusers `DDPMScheduler`. */
export class DDPMScheduler extends AlphaScheduler implements Scheduler {
  /** `config`: diffusers fields (missing ones take DDPMScheduler's defaults). */
  constructor(config: SchedulerConfigInput = {}, options: SchedulerOptions = {}) {
    super("ddpm", config, options);
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
    const predictX0 = this.x0Predictor(sa, sb);
    const n = sample.length;
    const pred = new Float32Array(n);
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const x0 = predictX0(sample[i], modelOutput[i]);
      pred[i] = x0;
      out[i] = f32(x0Coef * x0) + f32(xCoef * sample[i]);
    }
    if (t > 0) {
      const variance = Math.max(f32(f32(bPrev / b) * curBeta), 1e-20);
      let std: number;
      if (c.variance_type === "fixed_small") std = f32(Math.sqrt(variance));
      else if (c.variance_type === "fixed_small_log") std = f32(Math.exp(0.5 * f32(Math.log(variance))));
      else std = f32(Math.sqrt(curBeta));
      this.addStepNoise(out, std, rng, "step");
    }
    this._pred = pred;
    return out;
  }

  /** Training noise: sqrt(acp[t]) * x0 + sqrt(1 - acp[t]) * noise (one `t`, or one per batch item). */
  override addNoise(x0: Float32Array, noise: Float32Array, t: number | readonly number[]): Float32Array {
    return addNoise(this.alphasCumprod, x0, noise, t);
  }

  /** v-prediction target: sqrt(acp[t]) * noise - sqrt(1 - acp[t]) * x0 (one `t`, or one per batch item). */
  getVelocity(x0: Float32Array, noise: Float32Array, t: number | readonly number[]): Float32Array {
    return getVelocity(this.alphasCumprod, x0, noise, t);
  }
}
