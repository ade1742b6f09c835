/**
 * Euler sampler in sigma space (Karras et al. 2022, algorithm 2 without churn), diffusers'
 * `EulerDiscreteScheduler`: deterministic. The sample lives at scale sqrt(sigma^2 + 1) (`initNoiseSigma` is the
 * largest sigma), so the model input is divided by that (`scaleModelInput`). Optional Karras sigma spacing.
 */
import type { Rng } from "../random.ts";
import {
  checkStepInputs,
  checkSteps,
  floatTimesteps,
  frozen,
  indexForTimestep,
  karrasSigmas,
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
  sigmaToT,
} from "./scheduler.ts";

const f32 = Math.fround;

/** diffusers `EulerDiscreteScheduler` (s_churn = 0). */
export class EulerDiscreteScheduler implements Scheduler {
  readonly name: SchedulerName = "euler";
  readonly order = 1;
  readonly config: Readonly<SchedulerConfig>;
  readonly alphasCumprod: Float32Array;
  /** sigma of every training timestep, float32, ascending in t. */
  readonly trainSigmas: Float32Array;
  private _sigmas: Float32Array;
  private _timesteps: number[];
  private _n = 0;
  private stepIndex: number | null = null;
  private beginIndex: number | null = null;
  private _pred: Float32Array | null = null;

  /** `config`: diffusers fields (missing ones take EulerDiscreteScheduler's defaults). No randomness used. */
  constructor(config: SchedulerConfigInput = {}, _options: SchedulerOptions = {}) {
    this.config = resolveSchedulerConfig("euler", config);
    this.alphasCumprod = sigmaAlphasCumprod(this.config);
    this.trainSigmas = sigmasFromAlphasCumprod(this.alphasCumprod);
    const N = this.config.num_train_timesteps;
    this._sigmas = Float32Array.from([...this.trainSigmas].reverse().concat([0]));
    this._timesteps = frozen(npLinspace(0, N - 1, N).map(f32).reverse());
  }

  /** Frozen: copy it before changing it. */
  get timesteps(): number[] {
    return this._timesteps;
  }

  /** sigma at each step, then the final sigma (length `timesteps.length + 1`). */
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
    const c = this.config;
    checkSteps(n, c.num_train_timesteps);
    let timesteps = floatTimesteps(c, n);
    let sigmas = timesteps.map((t) => npInterp(t, this.trainSigmas));
    if (c.use_karras_sigmas) {
      const logSigmas = this.trainSigmas.map(Math.log);
      sigmas = karrasSigmas(c.sigma_min ?? sigmas[sigmas.length - 1], c.sigma_max ?? sigmas[0], n);
      timesteps = sigmas.map((s) => f32(sigmaToT(s, logSigmas)));
    }
    const last = c.final_sigmas_type === "zero" ? 0 : this.trainSigmas[0];
    this._sigmas = Float32Array.from([...sigmas, last]);
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

  step(modelOutput: Float32Array, t: number, sample: Float32Array, _rng?: Rng): Float32Array {
    checkStepInputs(modelOutput, sample);
    const i = this.currentIndex(t);
    if (i + 1 >= this._sigmas.length) {
      throw new RangeError("EulerDiscreteScheduler.step: past the last timestep");
    }
    const sigma = this._sigmas[i];
    const dt = f32(this._sigmas[i + 1] - sigma);
    const s2 = f32(f32(sigma * sigma) + 1);
    const cOut = f32(-sigma / f32(Math.sqrt(s2)));
    const pt = this.config.prediction_type;
    const n = sample.length;
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
      out[k] = x + f32(derivative * dt);
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

  /** img2img noise at `t`: x0 + sigma * noise (the sample scale these steps expect). */
  addNoise(x0: Float32Array, noise: Float32Array, t: number): Float32Array {
    return mixNoise(x0, noise, this.noiseScales(t));
  }
}
