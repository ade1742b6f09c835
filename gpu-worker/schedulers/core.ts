/**
 * Noise schedulers, the shared core: the contract every sampler implements (`Scheduler`), the fields of a
 * diffusers `scheduler_config.json` (`SchedulerConfig`) and their validation, the training noise schedule
 * (`betasFor`, `alphasCumprod`, `addNoise`, `getVelocity`) and the numerics the samplers share. Other code imports
 * all of this through `scheduler.ts`, which adds img2img's start and the factory.
 *
 * Numbers follow diffusers (snapshot 58eb52c) to float32 rounding: schedules are float32 where diffusers keeps
 * them in float32 torch tensors (betas, alphas_cumprod, sigmas, step coefficients) and float64 where it uses
 * numpy (timestep spacing, sigma interpolation). Samples are flat NCHW `Float32Array`s; one timestep (one scalar
 * coefficient) applies to every element. Nothing here draws random numbers: noise comes from an `Rng` the caller
 * passes in.
 *
 * Module note: this file imports no sampler (nor `scheduler.ts`), so the samplers and their base classes
 * (`base.ts`) can import it, and `extends`, without an import cycle; keep it that way.
 */
import type { Rng } from "../random.ts";

/** How betas are spaced over the training timesteps (diffusers `beta_schedule`). */
export type BetaSchedule = "linear" | "scaled_linear" | "squaredcos_cap_v2";
/** What the model predicts (diffusers `prediction_type`). */
export type PredictionType = "epsilon" | "v_prediction" | "sample";
/** How inference timesteps are picked from the training range (diffusers `timestep_spacing`). */
export type TimestepSpacing = "leading" | "linspace" | "trailing";
/** DDPM posterior variance (diffusers `variance_type`; the learned kinds need a split model output). */
export type VarianceType = "fixed_small" | "fixed_small_log" | "fixed_large";

/** The samplers this module builds, by the names the API uses. */
export const SCHEDULER_NAMES = ["ddim", "ddpm", "euler", "euler_a", "dpmpp_2m"] as const;
/** One of `SCHEDULER_NAMES`. */
export type SchedulerName = typeof SCHEDULER_NAMES[number];

/** diffusers `_class_name` of each sampler. */
export const SCHEDULER_CLASS_NAMES: Readonly<Record<SchedulerName, string>> = {
  ddim: "DDIMScheduler",
  ddpm: "DDPMScheduler",
  euler: "EulerDiscreteScheduler",
  euler_a: "EulerAncestralDiscreteScheduler",
  dpmpp_2m: "DPMSolverMultistepScheduler",
};

/**
 * The fields of a diffusers `scheduler_config.json` that these samplers read (snake_case, as in the file).
 * One type for all samplers; each reads its own subset, and missing fields take that sampler's diffusers default
 * (`defaultSchedulerConfig`).
 */
export interface SchedulerConfig {
  num_train_timesteps: number;
  beta_start: number;
  beta_end: number;
  beta_schedule: BetaSchedule;
  /** Explicit betas; overrides `beta_start`/`beta_end`/`beta_schedule` when not null. */
  trained_betas: number[] | null;
  prediction_type: PredictionType;
  timestep_spacing: TimestepSpacing;
  /** Added to `leading` timesteps (SD 1.x uses 1). */
  steps_offset: number;
  /** Rescale betas to zero terminal SNR (Lin et al. 2023). */
  rescale_betas_zero_snr: boolean;
  /** DDIM/DDPM: clamp the predicted x0 to `[-clip_sample_range, clip_sample_range]`. */
  clip_sample: boolean;
  clip_sample_range: number;
  /** DDIM: alpha_cumprod "before" the first training step is 1 (else alphas_cumprod[0]). */
  set_alpha_to_one: boolean;
  /** Dynamic thresholding (pixel-space models); not supported, must be false. */
  thresholding: boolean;
  /** DDPM posterior variance; DPM-Solver reads it only to reject the learned kinds (null). */
  variance_type: VarianceType | null;
  /** Euler: how sigmas are interpolated at fractional timesteps (only "linear"). */
  interpolation_type: "linear";
  /** Euler, DPM-Solver: Karras et al. (2022) sigma spacing instead of the timestep spacing. */
  use_karras_sigmas: boolean;
  /** Euler: Karras range override (null: the schedule's own ends). */
  sigma_min: number | null;
  sigma_max: number | null;
  /** Euler, DPM-Solver: sigma after the last step. */
  final_sigmas_type: "zero" | "sigma_min";
  /** Euler: "discrete" only. */
  timestep_type: "discrete";
  /** DPM-Solver: multistep order (1, 2 or 3). */
  solver_order: number;
  /** DPM-Solver: "dpmsolver++" only ("deis" is read as "dpmsolver++", as diffusers does). */
  algorithm_type: "dpmsolver++";
  /** DPM-Solver: second-order formula. */
  solver_type: "midpoint" | "heun";
  /** DPM-Solver: lower the order on the final steps (below 15 steps). */
  lower_order_final: boolean;
  /** DPM-Solver: first-order final step. */
  euler_at_final: boolean;
  /** DPM-Solver: clip the lambda(t) range from below (cosine schedules); -Infinity for none. */
  lambda_min_clipped: number;
}

/** A config as read from JSON: any subset of the fields, extra keys (`_class_name`, ...) ignored. */
export type SchedulerConfigInput = Partial<SchedulerConfig> | Readonly<Record<string, unknown>>;

/** Scales of `addNoise`: noisy = `signal` * x0 + `noise` * noise. */
export interface NoiseScales {
  signal: number;
  noise: number;
}

/**
 * The contract of every sampler. Call `setTimesteps(n)`, start from `initNoiseSigma` times unit noise (or from
 * `addNoise` for img2img), then for each `t` of `timesteps`: run the model on `scaleModelInput(x, t)` and set
 * `x = step(modelOutput, t, x)`.
 */
export interface Scheduler {
  /** Name in `SCHEDULER_NAMES`. */
  readonly name: SchedulerName;
  /** The resolved config (file values over this sampler's defaults). */
  readonly config: Readonly<SchedulerConfig>;
  /** Model evaluations per entry of `timesteps` (1 for all samplers here). */
  readonly order: number;
  /** Training schedule, float32, one per training timestep. */
  readonly alphasCumprod: Float32Array;
  /** Inference timesteps, first to last (integers, or float32 values for Euler's spacing); a frozen array. */
  readonly timesteps: number[];
  /** Steps given to the last `setTimesteps` (0 before). */
  readonly numInferenceSteps: number;
  /** Standard deviation of the initial noise for text-to-image. */
  readonly initNoiseSigma: number;
  /** x0 predicted by the last `step` (null before); handy for previews. */
  readonly predOriginalSample: Float32Array | null;
  /** Picks `n` inference timesteps and resets the sampler's state. */
  setTimesteps(n: number): void;
  /** Starts the chain at `timesteps[index]` (img2img); sigma samplers then ignore `t` for their position. */
  setBeginIndex(index: number): void;
  /** The model input at `t` (sigma samplers divide by sqrt(sigma^2 + 1); others return the sample). */
  scaleModelInput(sample: Float32Array, t: number): Float32Array;
  /** One sampling step from `t`: returns the previous (less noisy) sample. Stochastic samplers need `rng`. */
  step(modelOutput: Float32Array, t: number, sample: Float32Array, rng?: Rng): Float32Array;
  /** The scales `addNoise` uses at `t` (sigma samplers: at their begin index when one is set). */
  noiseScales(t: number): NoiseScales;
  /** Noises a clean sample to the level of `t`, as this sampler expects its input there. */
  addNoise(x0: Float32Array, noise: Float32Array, t: number): Float32Array;
}

/** Options the factory and the constructors take besides the config. */
export interface SchedulerOptions {
  /** Default noise source for stochastic steps (a `step` argument overrides it). */
  generator?: Rng;
  /** DDIM: weight of the noise (0 = deterministic DDIM, 1 = DDPM-like). */
  eta?: number;
}

// ---------------------------------------------------------------------------------------------------------
// Config

const BETA_SCHEDULES: readonly BetaSchedule[] = ["linear", "scaled_linear", "squaredcos_cap_v2"];
const PREDICTION_TYPES: readonly PredictionType[] = ["epsilon", "v_prediction", "sample"];
const SPACINGS: readonly TimestepSpacing[] = ["leading", "linspace", "trailing"];
const VARIANCE_TYPES: readonly VarianceType[] = ["fixed_small", "fixed_small_log", "fixed_large"];

const BASE_DEFAULTS: SchedulerConfig = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: "linear",
  trained_betas: null,
  prediction_type: "epsilon",
  timestep_spacing: "linspace",
  steps_offset: 0,
  rescale_betas_zero_snr: false,
  clip_sample: false,
  clip_sample_range: 1,
  set_alpha_to_one: true,
  thresholding: false,
  variance_type: null,
  interpolation_type: "linear",
  use_karras_sigmas: false,
  sigma_min: null,
  sigma_max: null,
  final_sigmas_type: "zero",
  timestep_type: "discrete",
  solver_order: 2,
  algorithm_type: "dpmsolver++",
  solver_type: "midpoint",
  lower_order_final: true,
  euler_at_final: false,
  lambda_min_clipped: -Infinity,
};

/** Config fields every sampler reads. */
const COMMON_KEYS: readonly string[] = [
  "num_train_timesteps",
  "beta_start",
  "beta_end",
  "beta_schedule",
  "trained_betas",
  "prediction_type",
  "timestep_spacing",
  "steps_offset",
  "rescale_betas_zero_snr",
];

const EXOTIC_SIGMAS = ["use_exponential_sigmas", "use_beta_sigmas"];

/** Further fields each sampler reads (and so validates); the rest of a file is ignored. */
const CLASS_KEYS: Record<SchedulerName, readonly string[]> = {
  ddim: ["clip_sample", "clip_sample_range", "set_alpha_to_one", "thresholding"],
  ddpm: ["clip_sample", "clip_sample_range", "thresholding", "variance_type"],
  euler: [
    "interpolation_type",
    "use_karras_sigmas",
    "sigma_min",
    "sigma_max",
    "final_sigmas_type",
    "timestep_type",
    ...EXOTIC_SIGMAS,
  ],
  euler_a: [],
  dpmpp_2m: [
    "thresholding",
    "variance_type",
    "use_karras_sigmas",
    "final_sigmas_type",
    "solver_order",
    "algorithm_type",
    "solver_type",
    "lower_order_final",
    "euler_at_final",
    "lambda_min_clipped",
    ...EXOTIC_SIGMAS,
    "use_lu_lambdas",
    "use_flow_sigmas",
    "use_dynamic_shifting",
  ],
};

const CLASS_DEFAULTS: Record<SchedulerName, Partial<SchedulerConfig>> = {
  ddim: { clip_sample: true, set_alpha_to_one: true, timestep_spacing: "leading" },
  ddpm: { clip_sample: true, timestep_spacing: "leading", variance_type: "fixed_small" },
  euler: {},
  euler_a: {},
  dpmpp_2m: {},
};

/** This sampler's diffusers defaults (what a key missing from `scheduler_config.json` means for it). */
export function defaultSchedulerConfig(name: SchedulerName): SchedulerConfig {
  return { ...BASE_DEFAULTS, ...CLASS_DEFAULTS[name] };
}

function oneOf<T extends string>(key: string, value: unknown, valid: readonly T[]): T {
  if (typeof value !== "string" || !(valid as readonly string[]).includes(value)) {
    throw new RangeError(
      `Scheduler config ${key} ${JSON.stringify(value)} is not supported. Should be one of: ${
        valid.join(", ")
      }`,
    );
  }
  return value as T;
}

function num(key: string, value: unknown, test: (v: number) => boolean, what: string): number {
  if (typeof value !== "number" || !test(value)) {
    throw new RangeError(`Scheduler config ${key} ${JSON.stringify(value)} is not valid: expected ${what}`);
  }
  return value;
}

function bool(key: string, value: unknown): boolean {
  if (typeof value !== "boolean") {
    throw new RangeError(`Scheduler config ${key} ${JSON.stringify(value)} must be true or false`);
  }
  return value;
}

/** Reads a number that Python may have written as a string ("-inf", "-Infinity"). */
function extendedNumber(value: unknown): unknown {
  if (typeof value !== "string") return value;
  const v = value.trim().toLowerCase();
  if (v === "-inf" || v === "-infinity") return -Infinity;
  if (v === "inf" || v === "infinity" || v === "+inf") return Infinity;
  return value;
}

/**
 * Resolves a config for sampler `name`: the file's values for the fields this sampler reads, over its defaults,
 * validated; every other key is ignored (a DPM-only setting does not stop DDIM). A read field with an unsupported
 * value throws a RangeError that lists the valid values: options that would change the numbers if ignored
 * (thresholding, exotic sigma spacings, learned variances, other DPM algorithms) are rejected, not ignored.
 */
export function resolveSchedulerConfig(
  name: SchedulerName,
  input: SchedulerConfigInput = {},
): SchedulerConfig {
  const raw = input as Record<string, unknown>;
  const c = defaultSchedulerConfig(name);
  const uses = (k: string) => COMMON_KEYS.includes(k) || CLASS_KEYS[name].includes(k);
  // Fields this sampler does not read keep their defaults (a DPM-only value must not stop DDIM).
  const get = (k: keyof SchedulerConfig): unknown => (raw[k] === undefined || !uses(k) ? c[k] : raw[k]);
  const isInt = (v: number) => Number.isSafeInteger(v);

  c.num_train_timesteps = num(
    "num_train_timesteps",
    get("num_train_timesteps"),
    (v) => isInt(v) && v >= 2,
    "an integer >= 2",
  );
  c.beta_start = num(
    "beta_start",
    get("beta_start"),
    (v) => Number.isFinite(v) && v >= 0 && v < 1,
    "a number in [0, 1)",
  );
  c.beta_end = num(
    "beta_end",
    get("beta_end"),
    (v) => Number.isFinite(v) && v >= 0 && v < 1,
    "a number in [0, 1)",
  );
  c.beta_schedule = oneOf("beta_schedule", get("beta_schedule"), BETA_SCHEDULES);
  const tb = get("trained_betas");
  if (tb !== null) {
    if (!Array.isArray(tb) || tb.length < 2 || !tb.every((b) => typeof b === "number" && b >= 0 && b < 1)) {
      throw new RangeError("Scheduler config trained_betas must be null or an array of numbers in [0, 1)");
    }
    c.trained_betas = [...tb];
    c.num_train_timesteps = tb.length;
  }
  c.prediction_type = oneOf("prediction_type", get("prediction_type"), PREDICTION_TYPES);
  c.timestep_spacing = oneOf("timestep_spacing", get("timestep_spacing"), SPACINGS);
  c.steps_offset = num(
    "steps_offset",
    get("steps_offset"),
    (v) => isInt(v) && v >= 0,
    "a non-negative integer",
  );
  c.rescale_betas_zero_snr = bool("rescale_betas_zero_snr", get("rescale_betas_zero_snr"));
  c.clip_sample = bool("clip_sample", get("clip_sample"));
  c.clip_sample_range = num("clip_sample_range", get("clip_sample_range"), (v) => v > 0, "a positive number");
  c.set_alpha_to_one = bool("set_alpha_to_one", get("set_alpha_to_one"));
  c.thresholding = bool("thresholding", get("thresholding"));
  if (c.thresholding) {
    throw new RangeError(
      "Scheduler config thresholding true is not supported (dynamic thresholding is for pixel-space models)",
    );
  }
  const vt = get("variance_type");
  if (name === "ddpm") c.variance_type = oneOf("variance_type", vt, VARIANCE_TYPES);
  else if (vt !== null) {
    throw new RangeError(
      `Scheduler config variance_type ${JSON.stringify(vt)} is not supported. Should be one of: null`,
    );
  }
  c.interpolation_type = oneOf("interpolation_type", get("interpolation_type"), ["linear"] as const);
  c.use_karras_sigmas = bool("use_karras_sigmas", get("use_karras_sigmas"));
  for (const k of ["sigma_min", "sigma_max"] as const) {
    const v = get(k);
    c[k] = v === null ? null : num(k, v, (x) => x > 0 && Number.isFinite(x), "null or a positive number");
  }
  c.final_sigmas_type = oneOf("final_sigmas_type", get("final_sigmas_type"), ["zero", "sigma_min"] as const);
  c.timestep_type = oneOf("timestep_type", get("timestep_type"), ["discrete"] as const);
  c.solver_order = num(
    "solver_order",
    get("solver_order"),
    (v) => v === 1 || v === 2 || v === 3,
    "1, 2 or 3",
  );
  const algo = get("algorithm_type") === "deis" ? "dpmsolver++" : get("algorithm_type");
  c.algorithm_type = oneOf("algorithm_type", algo, ["dpmsolver++"] as const);
  const st = get("solver_type");
  c.solver_type = oneOf(
    "solver_type",
    st === "logrho" || st === "bh1" || st === "bh2" ? "midpoint" : st,
    [
      "midpoint",
      "heun",
    ] as const,
  );
  c.lower_order_final = bool("lower_order_final", get("lower_order_final"));
  c.euler_at_final = bool("euler_at_final", get("euler_at_final"));
  c.lambda_min_clipped = num(
    "lambda_min_clipped",
    extendedNumber(get("lambda_min_clipped")),
    (v) => !Number.isNaN(v),
    "a number or -Infinity",
  );
  for (
    const k of [
      "use_exponential_sigmas",
      "use_beta_sigmas",
      "use_lu_lambdas",
      "use_flow_sigmas",
      "use_dynamic_shifting",
    ]
  ) {
    if (uses(k) && raw[k] !== undefined && raw[k] !== false && raw[k] !== null) {
      throw new RangeError(
        `Scheduler config ${k} ${JSON.stringify(raw[k])} is not supported. Should be one of: false`,
      );
    }
  }
  return c;
}

/**
 * Parses a `scheduler_config.json` text, accepting the `NaN`, `Infinity` and `-Infinity` tokens Python's
 * `json.dump` writes (DPM-Solver's `lambda_min_clipped` is `-Infinity`), which `JSON.parse` rejects.
 */
export function parseSchedulerConfigJson(text: string): Record<string, unknown> {
  const TOKENS: Record<string, number> = { "NaN": NaN, "Infinity": Infinity, "-Infinity": -Infinity };
  const marker = "\u0000pynum:";
  let out = "";
  let i = 0;
  while (i < text.length) {
    const ch = text[i];
    if (ch === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      out += text.slice(i, j + 1);
      i = j + 1;
      continue;
    }
    const tok = ["-Infinity", "Infinity", "NaN"].find((t) => text.startsWith(t, i));
    if (tok) {
      out += JSON.stringify(marker + tok);
      i += tok.length;
      continue;
    }
    out += ch;
    i++;
  }
  const parsed = JSON.parse(
    out,
    (_k, v) => (typeof v === "string" && v.startsWith(marker) ? TOKENS[v.slice(marker.length)] : v),
  );
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new TypeError("scheduler config must be a JSON object");
  }
  return parsed;
}

// ---------------------------------------------------------------------------------------------------------
// Training schedule

const f32 = Math.fround;

/** torch.linspace(start, end, steps, dtype=float32) as computed on CPU (float32 step, from both ends). */
function torchLinspaceF32(start: number, end: number, steps: number): Float32Array {
  const out = new Float32Array(steps);
  if (steps === 1) {
    out[0] = start;
    return out;
  }
  const s = f32(start), e = f32(end);
  const step = f32(f32(e - s) / (steps - 1));
  const halfway = Math.floor(steps / 2);
  for (let i = 0; i < steps; i++) {
    out[i] = i < halfway ? f32(s + f32(step * i)) : f32(e - f32(step * (steps - i - 1)));
  }
  return out;
}

/** Betas of the cosine ("squaredcos_cap_v2") schedule, computed in float64 as diffusers does. */
function cosineBetas(n: number, maxBeta = 0.999): Float32Array {
  const alphaBar = (t: number) => Math.cos((t + 0.008) / 1.008 * Math.PI / 2) ** 2;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.min(1 - alphaBar((i + 1) / n) / alphaBar(i / n), maxBeta);
  return out;
}

/** Rescales betas to zero terminal SNR (Lin et al. 2023, algorithm 1), in float32 like diffusers. */
function rescaleZeroTerminalSnr(betas: Float32Array): Float32Array {
  const acp = alphasCumprod(betas);
  const sq = acp.map((a) => f32(Math.sqrt(a)));
  const s0 = sq[0], sT = sq[sq.length - 1];
  const scale = f32(s0 / f32(s0 - sT));
  const bar = sq.map((v) => {
    const r = f32(f32(v - sT) * scale);
    return f32(r * r);
  });
  const out = new Float32Array(betas.length);
  out[0] = f32(1 - bar[0]);
  for (let i = 1; i < bar.length; i++) out[i] = f32(1 - f32(bar[i] / bar[i - 1]));
  return out;
}

/** The float32 betas of a config (`trained_betas`, or `beta_schedule` between `beta_start` and `beta_end`). */
export function betasFor(config: SchedulerConfigInput): Float32Array {
  const c = { ...BASE_DEFAULTS, ...(config as Partial<SchedulerConfig>) };
  let betas: Float32Array;
  if (c.trained_betas) betas = Float32Array.from(c.trained_betas);
  else if (c.beta_schedule === "linear") {
    betas = torchLinspaceF32(c.beta_start, c.beta_end, c.num_train_timesteps);
  } else if (c.beta_schedule === "scaled_linear") {
    betas = torchLinspaceF32(Math.sqrt(c.beta_start), Math.sqrt(c.beta_end), c.num_train_timesteps).map((b) =>
      f32(b * b)
    );
  } else if (c.beta_schedule === "squaredcos_cap_v2") betas = cosineBetas(c.num_train_timesteps);
  else {throw new RangeError(
      `beta_schedule ${JSON.stringify(c.beta_schedule)} is not supported. Should be one of: ${
        BETA_SCHEDULES.join(", ")
      }`,
    );}
  return c.rescale_betas_zero_snr ? rescaleZeroTerminalSnr(betas) : betas;
}

/** Cumulative products of alphas = 1 - betas (float32 values, accumulated in float64 as torch's CPU cumprod). */
export function alphasCumprod(betas: Float32Array): Float32Array {
  const out = new Float32Array(betas.length);
  let acc = 1;
  for (let i = 0; i < betas.length; i++) {
    acc *= f32(1 - betas[i]);
    out[i] = acc;
  }
  return out;
}

function trainIndex(acp: Float32Array, t: number): number {
  if (!Number.isInteger(t) || t < 0 || t >= acp.length) {
    throw new RangeError(`timestep ${t} is not a training timestep (an integer in [0, ${acp.length - 1}])`);
  }
  return t;
}

function sameLength(a: Float32Array, b: Float32Array, what: string): void {
  if (a.length !== b.length) throw new RangeError(`${what}: lengths ${a.length} and ${b.length} differ`);
}

/**
 * `f(sqrt(acp[t]), sqrt(1 - acp[t]), i)` (float32 scales) for every element `i` of `x0`, for `addNoise` and
 * `getVelocity`: `t` is one integer timestep for all, or one per batch item (`x0.length` divisible by `t.length`).
 */
function perTimestep(
  what: string,
  acp: Float32Array,
  x0: Float32Array,
  noise: Float32Array,
  t: number | readonly number[],
  f: (sa: number, sb: number, i: number) => number,
): Float32Array {
  sameLength(x0, noise, what);
  const ts = typeof t === "number" ? [t] : t;
  if (ts.length === 0 || x0.length % ts.length !== 0) {
    throw new RangeError(
      `${ts.length} timesteps do not split a sample of ${x0.length} elements into equal items`,
    );
  }
  const per = x0.length / ts.length;
  const out = new Float32Array(x0.length);
  for (let b = 0; b < ts.length; b++) {
    const a = acp[trainIndex(acp, ts[b])];
    const sa = f32(Math.sqrt(a)), sb = f32(Math.sqrt(f32(1 - a)));
    for (let i = b * per; i < (b + 1) * per; i++) out[i] = f(sa, sb, i);
  }
  return out;
}

/**
 * The DDPM forward process (training noise): sqrt(acp[t]) * x0 + sqrt(1 - acp[t]) * noise. `t` is one integer
 * timestep, or one per batch item.
 */
export function addNoise(
  acp: Float32Array,
  x0: Float32Array,
  noise: Float32Array,
  t: number | readonly number[],
): Float32Array {
  return perTimestep("addNoise", acp, x0, noise, t, (sa, sb, i) => f32(sa * x0[i]) + f32(sb * noise[i]));
}

/**
 * The v-prediction target (Salimans & Ho 2022): sqrt(acp[t]) * noise - sqrt(1 - acp[t]) * x0. `t` is one
 * integer timestep, or one per batch item.
 */
export function getVelocity(
  acp: Float32Array,
  x0: Float32Array,
  noise: Float32Array,
  t: number | readonly number[],
): Float32Array {
  return perTimestep("getVelocity", acp, x0, noise, t, (sa, sb, i) => f32(sa * noise[i]) - f32(sb * x0[i]));
}

// ---------------------------------------------------------------------------------------------------------
// Shared numerics (numpy semantics in float64)

/** numpy's round: half to even. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** np.linspace(start, stop, num) in float64 (i * step + start, the last one exactly `stop`). */
export function npLinspace(start: number, stop: number, num: number): number[] {
  if (num === 1) return [start];
  const step = (stop - start) / (num - 1);
  const out = Array.from({ length: num }, (_, i) => i * step + start);
  out[num - 1] = stop;
  return out;
}

/** np.arange(start, stop, step) in float64. */
export function npArange(start: number, stop: number, step: number): number[] {
  const n = Math.max(0, Math.ceil((stop - start) / step));
  const out = new Array<number>(n);
  if (n > 0) out[0] = start;
  if (n > 1) {
    const delta = (start + step) - start;
    for (let i = 1; i < n; i++) out[i] = start + i * delta;
  }
  return out;
}

/** np.interp(x, arange(len(fp)), fp) in float64. */
export function npInterp(x: number, fp: ArrayLike<number>): number {
  const last = fp.length - 1;
  if (x <= 0) return fp[0];
  if (x >= last) return fp[last];
  const j = Math.floor(x);
  if (j === x) return fp[j];
  // numpy: slope = (fp[j+1] - fp[j]) / (xp[j+1] - xp[j]), and xp steps by exactly 1 here
  return (fp[j + 1] - fp[j]) * (x - j) + fp[j];
}

/** Integer inference timesteps for DDIM/DDPM (diffusers' three spacings). */
export function discreteTimesteps(c: SchedulerConfig, n: number): number[] {
  const N = c.num_train_timesteps;
  if (c.timestep_spacing === "linspace") return npLinspace(0, N - 1, n).map(roundHalfEven).reverse();
  if (c.timestep_spacing === "leading") {
    const ratio = Math.floor(N / n);
    return Array.from({ length: n }, (_, i) => (n - 1 - i) * ratio + c.steps_offset);
  }
  return npArange(N, 0, -N / n).map((v) => roundHalfEven(v) - 1);
}

/** Float inference timesteps for the Euler samplers (diffusers' three spacings, float32 values). */
export function floatTimesteps(c: SchedulerConfig, n: number): number[] {
  // only linspace keeps fractions; the other spacings give the integer timesteps of DDIM/DDPM
  if (c.timestep_spacing === "linspace") {
    return npLinspace(0, c.num_train_timesteps - 1, n).map(f32).reverse();
  }
  return discreteTimesteps(c, n).map(f32);
}

/**
 * The training schedule of the sigma samplers (Euler, DPM-Solver): with `rescale_betas_zero_snr` diffusers sets
 * the last alpha_cumprod to 2^-24 so that the terminal sigma stays finite.
 */
export function sigmaAlphasCumprod(c: SchedulerConfig): Float32Array {
  const acp = alphasCumprod(betasFor(c));
  if (c.rescale_betas_zero_snr) acp[acp.length - 1] = 2 ** -24;
  return acp;
}

/** sigma(t) = sqrt((1 - acp) / acp), float32 like diffusers' torch expression. */
export function sigmasFromAlphasCumprod(acp: Float32Array): Float32Array {
  return acp.map((a) => f32(Math.sqrt(f32(f32(1 - a) / a))));
}

/** Karras et al. (2022) sigmas, rho = 7, from `sigmaMax` down to `sigmaMin` (float64). */
export function karrasSigmas(sigmaMin: number, sigmaMax: number, n: number): number[] {
  const rho = 7;
  const lo = sigmaMin ** (1 / rho), hi = sigmaMax ** (1 / rho);
  return npLinspace(0, 1, n).map((r) => (hi + r * (lo - hi)) ** rho);
}

/** Fractional training timestep of `sigma` by interpolating log-sigmas (diffusers `_sigma_to_t`). */
export function sigmaToT(sigma: number, logSigmas: Float32Array): number {
  const logSigma = Math.log(Math.max(sigma, 1e-10));
  let low = 0;
  for (let i = 0; i < logSigmas.length; i++) if (logSigma - logSigmas[i] >= 0) low = i;
  low = Math.min(low, logSigmas.length - 2);
  const lo = logSigmas[low], hi = logSigmas[low + 1];
  const w = Math.min(Math.max((lo - logSigma) / (lo - hi), 0), 1);
  return (1 - w) * low + w * (low + 1);
}

/** Position of `t` in `timesteps` (the second match when it repeats), or `fallback` (throws when undefined). */
export function indexForTimestep(timesteps: readonly number[], t: number, fallback?: number): number {
  const first = timesteps.indexOf(t);
  if (first < 0) {
    if (fallback !== undefined) return fallback;
    throw new RangeError(
      `timestep ${t} is not one of this scheduler's timesteps (${timesteps.slice(0, 4).join(", ")}, ...)`,
    );
  }
  const second = timesteps.indexOf(t, first + 1);
  return second >= 0 ? second : first;
}

/** Freezes a timestep list (the samplers hand out their own array; mutating it would corrupt their state). */
export function frozen(timesteps: number[]): number[] {
  return Object.freeze(timesteps) as number[];
}

/** Checks a step count for `setTimesteps`. */
export function checkSteps(n: number, numTrain: number): void {
  if (!Number.isSafeInteger(n) || n < 1 || n > numTrain) {
    throw new RangeError(`number of inference steps ${n} must be an integer in [1, ${numTrain}]`);
  }
}

/** Checks that model output and sample have the same length. */
export function checkStepInputs(modelOutput: Float32Array, sample: Float32Array): void {
  sameLength(modelOutput, sample, "step: model output and sample");
}

/** noisy = signal * x0 + noise * noise, for the `addNoise` methods. */
export function mixNoise(x0: Float32Array, noise: Float32Array, s: NoiseScales): Float32Array {
  sameLength(x0, noise, "addNoise");
  const out = new Float32Array(x0.length);
  for (let i = 0; i < x0.length; i++) out[i] = f32(s.signal * x0[i]) + f32(s.noise * noise[i]);
  return out;
}
