/**
 * DDIM sampler (Song et al. 2020), diffusers' `DDIMScheduler`: deterministic with eta = 0 (the default), DDPM-like
 * noise with eta > 0 (then it needs an `Rng`). Works on integer training timesteps; the model input is not scaled.
 */
import type { Rng } from "../random.ts";
import { AlphaScheduler } from "./base.ts";
import { checkStepInputs, type Scheduler, type SchedulerConfigInput, type SchedulerOptions } from "./core.ts";

const f32 = Math.fround;

/** diffusers `DDIMScheduler`. */
export class DDIMScheduler extends AlphaScheduler implements Scheduler {
  /** alpha_cumprod after the last step: 1 with `set_alpha_to_one`, else alphas_cumprod[0]. */
  readonly finalAlphaCumprod: number;
  /** Noise weight (0 = DDIM). */
  readonly eta: number;

  /** `config`: diffusers fields (missing ones take DDIMScheduler's defaults); `options.eta` defaults to 0. */
  constructor(config: SchedulerConfigInput = {}, options: SchedulerOptions = {}) {
    super("ddim", config, options);
    this.finalAlphaCumprod = this.config.set_alpha_to_one ? 1 : this.alphasCumprod[0];
    this.eta = options.eta ?? 0;
    if (!(this.eta >= 0)) throw new RangeError(`eta ${this.eta} must be >= 0`);
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array, rng?: Rng): Float32Array {
    this.requireTimesteps("step");
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
    const pt = c.prediction_type;
    const predictX0 = this.x0Predictor(sa, sb);
    const n = sample.length;
    const pred = new Float32Array(n);
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const x = sample[i], m = modelOutput[i];
      // the noise the output stands for ("sample": from x0 before clipping, i.e. the output itself)
      let eps: number;
      if (pt === "epsilon") eps = m;
      else if (pt === "v_prediction") eps = f32(f32(sa * m) + f32(sb * x));
      else eps = f32(f32(x - f32(sa * m)) / sb);
      const x0 = predictX0(x, m);
      pred[i] = x0;
      out[i] = f32(saPrev * x0) + f32(dirCoef * eps);
    }
    if (this.eta > 0) this.addStepNoise(out, std, rng, "step with eta > 0");
    this._pred = pred;
    return out;
  }
}
