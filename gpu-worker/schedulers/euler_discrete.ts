/**
 * Euler sampler in sigma space (Karras et al. 2022, algorithm 2 without churn), diffusers'
 * `EulerDiscreteScheduler`: deterministic. The sample lives at scale sqrt(sigma^2 + 1) (`initNoiseSigma` is the
 * largest sigma), so the model input is divided by that (`scaleModelInput`). Optional Karras sigma spacing.
 */
import type { Rng } from "../random.ts";
import { EulerFamilyScheduler } from "./base.ts";
import { checkStepInputs, type Scheduler, type SchedulerConfigInput, type SchedulerOptions } from "./core.ts";

/** diffusers `EulerDiscreteScheduler` (s_churn = 0). */
export class EulerDiscreteScheduler extends EulerFamilyScheduler implements Scheduler {
  /** `config`: diffusers fields (missing ones take EulerDiscreteScheduler's defaults). No randomness used. */
  constructor(config: SchedulerConfigInput = {}, options: SchedulerOptions = {}) {
    super("euler", config, options);
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array, _rng?: Rng): Float32Array {
    checkStepInputs(modelOutput, sample);
    const i = this.stepPosition(t);
    return this.eulerStep(modelOutput, sample, i, this._sigmas[i + 1]);
  }
}
