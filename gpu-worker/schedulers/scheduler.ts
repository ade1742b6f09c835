/**
 * Noise schedulers, the public module: everything of the shared core (`core.ts`: the `Scheduler` contract, the
 * `SchedulerConfig` fields, the training noise schedule `betasFor`, `alphasCumprod`, `addNoise`, `getVelocity`,
 * the shared numerics), img2img's start-at-strength (`timestepsForStrength`) and the factory `createScheduler`
 * that builds a sampler from a diffusers config.
 *
 * Module note: this file imports the sampler classes for the factory; the samplers import `core.ts` and
 * `base.ts`, never this file, so there is no import cycle.
 */
export * from "./core.ts";
import {
  type NoiseScales,
  type Scheduler,
  SCHEDULER_CLASS_NAMES,
  SCHEDULER_NAMES,
  type SchedulerConfigInput,
  type SchedulerName,
  type SchedulerOptions,
} from "./core.ts";
import { DDIMScheduler } from "./ddim.ts";
import { DDPMScheduler } from "./ddpm.ts";
import { EulerDiscreteScheduler } from "./euler_discrete.ts";
import { EulerAncestralDiscreteScheduler } from "./euler_ancestral.ts";
import { DPMSolverMultistepScheduler } from "./dpm_solver_multistep.ts";

// ---------------------------------------------------------------------------------------------------------
// img2img and the factory

/** Where an img2img chain starts: its timesteps and their index in the full schedule. */
export interface StrengthStart {
  /** The timesteps to run, `scheduler.timesteps` from `startIndex` on. */
  timesteps: number[];
  /** Index of the first one in `scheduler.timesteps` (already given to `setBeginIndex`). */
  startIndex: number;
  /** What `addNoise` applies to the clean latents at `timesteps[0]`. */
  noiseScales: NoiseScales;
}

/**
 * img2img's start (diffusers `get_timesteps`): of `numInferenceSteps` (set by `setTimesteps` first), runs the
 * last `floor(n * strength)`; strength 1 is the whole chain from pure noise. Sets the scheduler's begin index.
 * Throws a RangeError for a strength outside [0, 1] or one that leaves no step.
 */
export function timestepsForStrength(scheduler: Scheduler, strength: number): StrengthStart {
  const n = scheduler.numInferenceSteps;
  if (n < 1) throw new RangeError("timestepsForStrength: call setTimesteps first");
  if (!(strength >= 0 && strength <= 1)) throw new RangeError(`strength ${strength} must be in [0, 1]`);
  const initTimestep = Math.min(Math.floor(n * strength), n);
  const tStart = Math.max(n - initTimestep, 0);
  const startIndex = tStart * scheduler.order;
  const timesteps = scheduler.timesteps.slice(startIndex);
  if (timesteps.length === 0) {
    throw new RangeError(
      `strength ${strength} with ${n} steps leaves no denoising step (needs strength >= ${1 / n})`,
    );
  }
  scheduler.setBeginIndex(startIndex);
  return { timesteps, startIndex, noiseScales: scheduler.noiseScales(timesteps[0]) };
}

/** True when `name` is one of `SCHEDULER_NAMES`. */
export function isSchedulerName(name: unknown): name is SchedulerName {
  return typeof name === "string" && (SCHEDULER_NAMES as readonly string[]).includes(name);
}

/** The sampler for a diffusers `_class_name`; classes without a port here (PNDM, LMS, ...) fall back to DDIM. */
export function schedulerNameForClass(className: unknown): SchedulerName {
  for (const name of SCHEDULER_NAMES) if (SCHEDULER_CLASS_NAMES[name] === className) return name;
  return "ddim";
}

/**
 * Builds a sampler from a diffusers `scheduler_config.json` object. The sampler is `override.name` if given
 * (one of `SCHEDULER_NAMES`, else a RangeError naming the valid ones), else the one for `_class_name`
 * (unsupported classes such as SD 1.5's `PNDMScheduler` get DDIM with the same betas). Keys missing from the
 * file take the chosen sampler's diffusers defaults, as diffusers' `from_config` does.
 */
export function createScheduler(
  config: SchedulerConfigInput & { _class_name?: string },
  override: { name?: string } & SchedulerOptions = {},
): Scheduler {
  const name = override.name ?? schedulerNameForClass((config as { _class_name?: unknown })._class_name);
  if (!isSchedulerName(name)) {
    throw new RangeError(
      `Unknown scheduler ${JSON.stringify(name)}. Should be one of: ${SCHEDULER_NAMES.join(", ")}`,
    );
  }
  const options: SchedulerOptions = { generator: override.generator, eta: override.eta };
  switch (name) {
    case "ddim":
      return new DDIMScheduler(config, options);
    case "ddpm":
      return new DDPMScheduler(config, options);
    case "euler":
      return new EulerDiscreteScheduler(config, options);
    case "euler_a":
      return new EulerAncestralDiscreteScheduler(config, options);
    case "dpmpp_2m":
      return new DPMSolverMultistepScheduler(config, options);
  }
}
