/**
 * Euler ancestral sampler in sigma space (k-diffusion's `sample_euler_ancestral`, eta = 1), diffusers'
 * `EulerAncestralDiscreteScheduler`: each step goes down to sigma_down with an Euler step and adds fresh noise of
 * std sigma_up, drawn from the `Rng` (step argument or `options.generator`). Same seed, same chain. The schedule
 * is Euler's (this sampler reads no Karras or final-sigma options, so it is always the plain one, ending at 0).
 */
import type { Rng } from "../random.ts";
import { EulerFamilyScheduler } from "./base.ts";
import { checkStepInputs, type Scheduler, type SchedulerConfigInput, type SchedulerOptions } from "./core.ts";

const f32 = Math.fround;

/** diffusers `EulerAncestralDiscreteScheduler`. */
export class EulerAncestralDiscreteScheduler extends EulerFamilyScheduler implements Scheduler {
  /** `config`: diffusers fields (missing ones take the diffusers defaults); `options.generator`: noise source. */
  constructor(config: SchedulerConfigInput = {}, options: SchedulerOptions = {}) {
    super("euler_a", config, options);
  }

  /** One ancestral step; needs `rng` or `options.generator` (noise is drawn on every step, the last too). */
  step(modelOutput: Float32Array, t: number, sample: Float32Array, rng?: Rng): Float32Array {
    checkStepInputs(modelOutput, sample);
    const g = this.noiseSource(rng, "step");
    const i = this.stepPosition(t);
    const sigma = this._sigmas[i], sigmaTo = this._sigmas[i + 1];
    const from2 = f32(sigma * sigma), to2 = f32(sigmaTo * sigmaTo);
    const sigmaUp = f32(Math.sqrt(f32(f32(to2 * f32(from2 - to2)) / from2)));
    const sigmaDown = f32(Math.sqrt(f32(to2 - f32(sigmaUp * sigmaUp))));
    return this.eulerStep(modelOutput, sample, i, sigmaDown, g.normal(sample.length), sigmaUp);
  }
}
