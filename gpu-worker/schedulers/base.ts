/**
 * What the samplers share, as base classes: `BaseScheduler` (all five: config, timesteps, the x0 preview, the
 * default noise source), `AlphaScheduler` (DDIM, DDPM: integer timesteps that index alphas_cumprod, an unscaled
 * model input), `SigmaScheduler` (Euler, Euler ancestral, DPM-Solver++: a sigma per step, a step index and a
 * begin index) and `EulerFamilyScheduler` (the two Euler samplers: float timesteps, the sample at scale
 * sqrt(sigma^2 + 1), the Euler move). Each sampler adds its `step`.
 *
 * Imports `core.ts` only (not `scheduler.ts`, whose factory imports the samplers), so `extends` is safe.
 */
import type { Rng } from "../random.ts";
import {
  addNoise,
  alphasCumprod,
  betasFor,
  checkSteps,
  discreteTimesteps,
  floatTimesteps,
  frozen,
  indexForTimestep,
  karrasSigmas,
  mixNoise,
  type NoiseScales,
  npInterp,
  npLinspace,
  resolveSchedulerConfig,
  SCHEDULER_CLASS_NAMES,
  type SchedulerConfig,
  type SchedulerConfigInput,
  type SchedulerName,
  type SchedulerOptions,
  sigmaAlphasCumprod,
  sigmasFromAlphasCumprod,
  sigmaToT,
} from "./core.ts";

const f32 = Math.fround;

/** What every sampler shares (the rest of the `Scheduler` contract is up to the subclasses). */
export abstract class BaseScheduler {
  readonly name: SchedulerName;
  readonly order = 1;
  readonly config: Readonly<SchedulerConfig>;
  /** Default noise source of stochastic steps (a `step` argument overrides it). */
  protected readonly generator?: Rng;
  protected _timesteps: number[] = frozen([]);
  protected _n = 0;
  protected _pred: Float32Array | null = null;

  /** `config`: diffusers fields (missing ones take sampler `name`'s diffusers defaults). */
  protected constructor(name: SchedulerName, config: SchedulerConfigInput, options: SchedulerOptions) {
    this.name = name;
    this.config = resolveSchedulerConfig(name, config);
    this.generator = options.generator;
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

  /** diffusers' class name, for messages. */
  protected get className(): string {
    return SCHEDULER_CLASS_NAMES[this.name];
  }

  /** Throws unless `setTimesteps` has run (`method`: what was called). */
  protected requireTimesteps(method: string): void {
    if (this._n === 0) throw new Error(`${this.className}.${method}: call setTimesteps first`);
  }

  /** The noise source of a step: `rng`, else `options.generator`; throws when neither is there. */
  protected noiseSource(rng: Rng | undefined, call: string): Rng {
    const g = rng ?? this.generator;
    if (!g) throw new Error(`${this.className}.${call} needs an Rng (step argument or options.generator)`);
    return g;
  }
}

/** DDIM and DDPM: integer training timesteps, alphas_cumprod looked up at `t`, the model input not scaled. */
export abstract class AlphaScheduler extends BaseScheduler {
  readonly initNoiseSigma = 1;
  readonly betas: Float32Array;
  readonly alphasCumprod: Float32Array;

  protected constructor(name: SchedulerName, config: SchedulerConfigInput, options: SchedulerOptions) {
    super(name, config, options);
    this.betas = betasFor(this.config);
    this.alphasCumprod = alphasCumprod(this.betas);
    const N = this.config.num_train_timesteps;
    this._timesteps = frozen(Array.from({ length: N }, (_, i) => N - 1 - i));
  }

  setTimesteps(n: number): void {
    checkSteps(n, this.config.num_train_timesteps);
    this._n = n;
    this._timesteps = frozen(discreteTimesteps(this.config, n));
    this._pred = null;
  }

  /** Stateless per step: every step finds its position from `t`. */
  setBeginIndex(_index: number): void {}

  scaleModelInput(sample: Float32Array, _t: number): Float32Array {
    return sample;
  }

  protected alphaAt(t: number): number {
    const last = this.alphasCumprod.length - 1;
    if (!Number.isInteger(t) || t < 0 || t > last) {
      throw new RangeError(`${this.name.toUpperCase()} timestep ${t} must be an integer in [0, ${last}]`);
    }
    return this.alphasCumprod[t];
  }

  /**
   * The x0 a model output `m` at sample `x` predicts, at scales `sa` = sqrt(alpha_cumprod) and
   * `sb` = sqrt(1 - alpha_cumprod), clamped to [-clip_sample_range, clip_sample_range] with `clip_sample`.
   */
  protected x0Predictor(sa: number, sb: number): (x: number, m: number) => number {
    const c = this.config;
    const clip = c.clip_sample ? c.clip_sample_range : Infinity;
    const clamp = (x0: number) => Math.min(Math.max(x0, -clip), clip);
    if (c.prediction_type === "epsilon") return (x, m) => clamp(f32(f32(x - f32(sb * m)) / sa));
    if (c.prediction_type === "v_prediction") return (x, m) => clamp(f32(f32(sa * x) - f32(sb * m)));
    return (_x, m) => clamp(m);
  }

  /** Adds `std` times fresh unit noise from `rng` (or `options.generator`) to `out`, in place. */
  protected addStepNoise(out: Float32Array, std: number, rng: Rng | undefined, call: string): void {
    const noise = this.noiseSource(rng, call).normal(out.length);
    for (let i = 0; i < out.length; i++) out[i] += f32(std * noise[i]);
  }

  noiseScales(t: number): NoiseScales {
    const a = this.alphaAt(t);
    return { signal: f32(Math.sqrt(a)), noise: f32(Math.sqrt(f32(1 - a))) };
  }

  addNoise(x0: Float32Array, noise: Float32Array, t: number): Float32Array {
    return addNoise(this.alphasCumprod, x0, noise, t);
  }
}

/**
 * Euler, Euler ancestral and DPM-Solver++: a sigma per inference step (then the final sigma), a step index set
 * on the first call (from the begin index, or from `t`) and advanced by each step, and a begin index for img2img.
 */
export abstract class SigmaScheduler extends BaseScheduler {
  readonly alphasCumprod: Float32Array;
  /** sigma of every training timestep, float32, ascending in t. */
  readonly trainSigmas: Float32Array;
  protected _sigmas = new Float32Array(0);
  protected stepIndex: number | null = null;
  protected beginIndex: number | null = null;

  protected constructor(name: SchedulerName, config: SchedulerConfigInput, options: SchedulerOptions) {
    super(name, config, options);
    this.alphasCumprod = sigmaAlphasCumprod(this.config);
    this.trainSigmas = sigmasFromAlphasCumprod(this.alphasCumprod);
  }

  /** sigma at each step, then the final sigma (length `timesteps.length + 1`). */
  get sigmas(): Float32Array {
    return this._sigmas;
  }

  setBeginIndex(index: number): void {
    this.beginIndex = index;
  }

  /** Installs a schedule (`sigmas`: one per timestep, then the final one) and resets the position. */
  protected setSchedule(n: number, timesteps: number[], sigmas: number[]): void {
    this._sigmas = Float32Array.from(sigmas);
    this._timesteps = frozen(timesteps);
    this._n = n;
    this.stepIndex = null;
    this.beginIndex = null;
    this._pred = null;
  }

  /** Position of `t` in the timesteps (throws for a `t` not there; DPM-Solver falls back to the last). */
  protected indexOf(t: number): number {
    return indexForTimestep(this._timesteps, t);
  }

  protected currentIndex(t: number): number {
    if (this.stepIndex === null) this.stepIndex = this.beginIndex ?? this.indexOf(t);
    return this.stepIndex;
  }

  /** `currentIndex` for a step, which needs a sigma after it. */
  protected stepPosition(t: number): number {
    const i = this.currentIndex(t);
    if (i + 1 >= this._sigmas.length) throw new RangeError(`${this.className}.step: past the last timestep`);
    return i;
  }

  /** What `addNoise` applies at `sigma`. */
  protected abstract scalesAt(sigma: number): NoiseScales;

  noiseScales(t: number): NoiseScales {
    const i = this.beginIndex === null ? this.indexOf(t) : this.stepIndex ?? this.beginIndex;
    return this.scalesAt(this._sigmas[i]);
  }

  /** img2img noise at `t`, at the sample scale these steps expect. */
  addNoise(x0: Float32Array, noise: Float32Array, t: number): Float32Array {
    return mixNoise(x0, noise, this.noiseScales(t));
  }
}

/**
 * The Euler samplers: float timesteps (optionally Karras sigmas), the sample at scale sqrt(sigma^2 + 1)
 * (`initNoiseSigma` is the largest sigma, the model input is divided by that), img2img noise x0 + sigma * noise.
 * Before `setTimesteps` the schedule is every training timestep.
 */
export abstract class EulerFamilyScheduler extends SigmaScheduler {
  protected constructor(name: SchedulerName, config: SchedulerConfigInput, options: SchedulerOptions) {
    super(name, config, options);
    const N = this.config.num_train_timesteps;
    this._sigmas = Float32Array.from([...this.trainSigmas].reverse().concat([0]));
    this._timesteps = frozen(npLinspace(0, N - 1, N).map(f32).reverse());
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
    this.setSchedule(n, timesteps, [...sigmas, last]);
  }

  scaleModelInput(sample: Float32Array, t: number): Float32Array {
    const sigma = this._sigmas[this.currentIndex(t)];
    const d = f32(Math.sqrt(f32(f32(sigma * sigma) + 1)));
    return sample.map((x) => x / d);
  }

  protected scalesAt(sigma: number): NoiseScales {
    return { signal: 1, noise: sigma };
  }

  /**
   * The Euler move of step `i` from sigma to `sigmaTo` along the derivative (x - x0) / sigma, plus `noise` times
   * `noiseStd` when given; records the predicted x0 and advances the step index.
   */
  protected eulerStep(
    modelOutput: Float32Array,
    sample: Float32Array,
    i: number,
    sigmaTo: number,
    noise?: Float32Array,
    noiseStd = 0,
  ): Float32Array {
    const sigma = this._sigmas[i];
    const dt = f32(sigmaTo - sigma);
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
      const moved = f32(x + f32(derivative * dt));
      out[k] = noise ? moved + f32(noise[k] * noiseStd) : moved;
    }
    this.stepIndex = i + 1;
    this._pred = pred;
    return out;
  }
}
