/**
 * Euler ancestral sampler in sigma space (k-diffusion's `sample_euler_ancestral`, eta = 1), diffusers'
 * `EulerAncestralDiscreteScheduler`: each step goes down to sigma_down with an Euler step and adds fresh noise of
 * std sigma_up, drawn from the `Rng` (step argument or `options.generator`). Same seed, same chain.
 */
import type { Rng } from "../random.ts";
import {
  checkStepInputs,
  checkSteps,
  floatTimesteps,
  frozen,
  indexForTimestep,
  mixNoise,
  type NoiseScales,
  npInterp,
  npLinspace,
  resolveSchedulerConfig,
  type Scheduler,
  type SchedulerConfig,
  type SchedulerConfigInput,
  type SchedulerName,
  type SchedulerOptions,
  sigmaAlphasCumprod,
  sigmasFromAlphasCumprod,
} from "./scheduler.ts";

const f32 = Math.fround;

/** diffusers `EulerAncestralDiscreteScheduler`. */
export class EulerAncestralDiscreteScheduler implements Scheduler {
  readonly name: SchedulerName = "euler_a";
  readonly order = 1;
  readonly config: Readonly<SchedulerConfig>;
  readonly alphasCumprod: Float32Array;
  /** sigma of every training timestep, float32, ascending in t. */
  readonly trainSigmas: Float32Array;
  private generator?: Rng;
  private _sigmas: Float32Array;
  private _timesteps: number[];
  private _n = 0;
  private stepIndex: number | null = null;
  private beginIndex: number | null = null;
  private _pred: Float32Array | null = null;

  /** `config`: diffusers fields (missing ones take the diffusers defaults); `options.generator`: noise source. */
  constructor(config: SchedulerConfigInput = {}, options: SchedulerOptions = {}) {
    this.config = resolveSchedulerConfig("euler_a", config);
    this.alphasCumprod = sigmaAlphasCumprod(this.config);
    this.trainSigmas = sigmasFromAlphasCumprod(this.alphasCumprod);
    this.generator = options.generator;
    const N = this.config.num_train_timesteps;
    this._sigmas = Float32Array.from([...this.trainSigmas].reverse().concat([0]));
    this._timesteps = frozen(npLinspace(0, N - 1, N).reverse());
  }

  /** Frozen: copy it before changing it. */
  get timesteps(): number[] {
    return this._timesteps;
  }

  /** sigma at each step, then 0 (length `timesteps.length + 1`). */
  get sigmas(): Float32Array {
    return this._sigmas;
  }

  get numInferenceSteps(): number {
    return this._n;
  }

  get predOriginalSample(): Float32Array | null {
    return this._pred;
  }

  get initNoiseSigma(): number {
    const max = this._sigmas.reduce((m, s) => Math.max(m, s), 0);
    if (this.config.timestep_spacing === "leading") return f32(Math.sqrt(f32(f32(max * max) + 1)));
    return max;
  }

  setTimesteps(n: number): void {
    checkSteps(n, this.config.num_train_timesteps);
    const timesteps = floatTimesteps(this.config, n);
    this._sigmas = Float32Array.from([...timesteps.map((t) => npInterp(t, this.trainSigmas)), 0]);
    this._timesteps = frozen(timesteps);
    this._n = n;
    this.stepIndex = null;
    this.beginIndex = null;
    this._pred = null;
  }

  setBeginIndex(index: number): void {
    this.beginIndex = index;
  }

  private currentIndex(t: number): number {
    if (this.stepIndex === null) this.stepIndex = this.beginIndex ?? indexForTimestep(this._timesteps, t);
    return this.stepIndex;
  }

  scaleModelInput(sample: Float32Array, t: number): Float32Array {
    const sigma = this._sigmas[this.currentIndex(t)];
    const d = f32(Math.sqrt(f32(f32(sigma * sigma) + 1)));
    return sample.map((x) => x / d);
  }

  /** One ancestral step; needs `rng` or `options.generator` (noise is drawn on every step, the last too). */
  step(modelOutput: Float32Array, t: number, sample: Float32Array, rng?: Rng): Float32Array {
    checkStepInputs(modelOutput, sample);
    const g = rng ?? this.generator;
    if (!g) {
      throw new Error(
        "EulerAncestralDiscreteScheduler.step needs an Rng (step argument or options.generator)",
      );
    }
    const i = this.currentIndex(t);
    if (i + 1 >= this._sigmas.length) {
      throw new RangeError("EulerAncestralDiscreteScheduler.step: past the last timestep");
    }
    const sigma = this._sigmas[i], sigmaTo = this._sigmas[i + 1];
    const from2 = f32(sigma * sigma), to2 = f32(sigmaTo * sigmaTo);
    const sigmaUp = f32(Math.sqrt(f32(f32(to2 * f32(from2 - to2)) / from2)));
    const sigmaDown = f32(Math.sqrt(f32(to2 - f32(sigmaUp * sigmaUp))));
    const dt = f32(sigmaDown - sigma);
    const s2 = f32(from2 + 1);
    const cOut = f32(-sigma / f32(Math.sqrt(s2)));
    const pt = this.config.prediction_type;
    const n = sample.length;
    const noise = g.normal(n);
    const pred = new Float32Array(n);
    const out = new Float32Array(n);
    for (let k = 0; k < n; k++) {
      const x = sample[k], m = modelOutput[k];
      let x0: number;
      if (pt === "epsilon") x0 = f32(x - f32(sigma * m));
      else if (pt === "v_prediction") x0 = f32(f32(m * cOut) + f32(x / s2));
      else x0 = m;
      pred[k] = x0;
      const derivative = f32(f32(x - x0) / sigma);
      out[k] = f32(x + f32(derivative * dt)) + f32(noise[k] * sigmaUp);
    }
    this.stepIndex = i + 1;
    this._pred = pred;
    return out;
  }

  noiseScales(t: number): NoiseScales {
    const i = this.beginIndex === null
      ? indexForTimestep(this._timesteps, t)
      : this.stepIndex ?? this.beginIndex;
    return { signal: 1, noise: this._sigmas[i] };
  }

  /** img2img noise at `t`: x0 + sigma * noise. */
  addNoise(x0: Float32Array, noise: Float32Array, t: number): Float32Array {
    return mixNoise(x0, noise, this.noiseScales(t));
  }
}
