/**
 * The model-agnostic training loop: seeded data order, gradient accumulation, global-norm clipping, AdamW with a
 * diffusers lr schedule, rotating atomic checkpoints, exact resume, divergence detection, cancellation and
 * progress (steps/s, ETA). The model lives entirely in the caller's `GradientFn`.
 *
 * Determinism: samples are drawn as one stream over seeded epochs (epoch e is a shuffle of 0..N-1 from
 * `Rng.derive(seed, EPOCH_STREAM, e)`, so it does not depend on history), each micro-batch taking the next
 * `batchSize` of them, across epoch boundaries. Each micro-batch gets `Rng.derive(seed, MICRO_STREAM, step,
 * micro)` for its noise and timesteps. Hence a run resumed from a checkpoint reproduces the uninterrupted run
 * bit for bit, and 2 micro-batches of 2 see exactly the samples of one batch of 4.
 *
 * Steps are numbered from 1: `MicroBatch.step`, progress events, `TrainingDivergedError.step` and
 * `checkpoint-<step>` all count optimizer updates, the last one being the update just made (or being made).
 *
 * @example
 * ```ts
 * const w = { name: "w", shape: [1], data: new Float32Array(1) }; // fit w to 3
 * const gradients: GradientFn = () => {
 *   const r = w.data[0] - 3;
 *   return Promise.resolve({ loss: r * r, grads: { w: Float32Array.of(2 * r) } });
 * };
 * const { losses } = await runTraining({
 *   params: [w], gradients, datasetSize: 8, steps: 100, batchSize: 4, seed: 1, optimizer: { lr: 0.05 },
 * });
 * ```
 */
import { Rng } from "../random.ts";
import { clipGradNorm, globalGradNorm } from "./grad_clip.ts";
import { learningRate, type LrScheduleConfig, validateSchedule } from "./lr_schedule.ts";
import { AdamW, type AdamWConfig } from "./optimizer.ts";
import {
  CheckpointError,
  latestCheckpoint,
  loadCheckpoint,
  saveCheckpoint,
  type TrainingCheckpoint,
} from "./checkpoint.ts";

/** A trained tensor, updated in place. `weightDecay: false` exempts it from AdamW's decay. */
export interface TrainableParam {
  name: string;
  shape: number[];
  data: Float32Array;
  weightDecay?: boolean;
}

/** What a `GradientFn` is asked to compute: one micro-batch of update `step` (1-based). */
export interface MicroBatch {
  step: number;
  /** 0 .. gradientAccumulationSteps - 1. */
  micro: number;
  /** Dataset indices of the micro-batch's samples (`batchSize` of them). */
  indices: number[];
  /** This micro-batch's own stream (noise, timesteps), a function of (seed, step, micro) only. */
  rng: Rng;
}

/** The micro-batch's mean loss and the gradients of that mean loss, one per trainable parameter. */
export interface GradientResult {
  loss: number;
  grads: Record<string, Float32Array>;
}

/** Computes loss and gradients at the current parameter values. The loop copies the gradients it is given. */
export type GradientFn = (batch: MicroBatch) => Promise<GradientResult>;

/** Reported after every completed update. */
export interface ProgressEvent {
  step: number;
  steps: number;
  /** Mean loss over the update's micro-batches. */
  loss: number;
  /** The learning rate the update used. */
  lr: number;
  /** Global gradient norm before clipping. */
  gradNorm: number;
  /** Over a moving window of the last updates; NaN until one update is timed. */
  stepsPerSecond: number;
  etaSeconds: number;
}

export interface CheckpointOptions {
  dir: string;
  /** Save after every `every` updates (and after the last one). */
  every: number;
  /** Checkpoints kept in `dir` (default 3). */
  keep?: number;
  /** Caller's JSON-serializable settings (model, LoRA rank, ...) stored in each checkpoint's config. */
  config?: Record<string, unknown>;
}

export interface TrainingOptions {
  params: TrainableParam[];
  gradients: GradientFn;
  datasetSize: number;
  /** Total optimizer updates of the run (a resumed run counts the ones already done). */
  steps: number;
  /** Samples per micro-batch. */
  batchSize: number;
  gradientAccumulationSteps?: number;
  /** AdamW hyperparameters; missing ones take torch's defaults. */
  optimizer?: Partial<AdamWConfig>;
  /** Default constant; `totalSteps` defaults to `steps`. */
  lrSchedule?: Omit<LrScheduleConfig, "totalSteps"> & { totalSteps?: number };
  /** Clip the global gradient norm to this (diffusers' max_grad_norm); off when absent. */
  maxGradNorm?: number;
  seed: number;
  checkpoint?: CheckpointOptions;
  /** Continue from the latest checkpoint in `checkpoint.dir` (a fresh run when there is none). */
  resume?: boolean;
  onProgress?: (e: ProgressEvent) => void;
  /** Checked before every micro-batch; on abort the last completed update is checkpointed, then AbortError. */
  signal?: AbortSignal;
}

export interface TrainingResult {
  /** Updates completed. */
  steps: number;
  /** Loss of every update from the start of the run (index i is step i + 1), resumed history included. */
  losses: number[];
  /** `opts.params`, holding the trained values. */
  params: TrainableParam[];
  /** Step of the checkpoint the run resumed from, or null. */
  resumedFrom: number | null;
}

/** A non-finite loss, gradient or parameter; nothing of that update was checkpointed. */
export class TrainingDivergedError extends Error {
  constructor(readonly step: number, readonly reason: string) {
    super(`training diverged at step ${step}: ${reason}`);
    this.name = "TrainingDivergedError";
  }
}

/** Stream tags for `Rng.derive`, so data order and per-micro-batch streams never coincide. */
export const EPOCH_STREAM = 0x45504f43;
export const MICRO_STREAM = 0x4d494352;

/** Window of updates the steps/s estimate averages over. */
const RATE_WINDOW = 20;

/**
 * The seeded sample stream: position k is element k mod N of epoch floor(k / N)'s shuffle.
 * Keeps the two most recent epochs' permutations.
 */
export class EpochSampler {
  private readonly cache = new Map<number, number[]>();

  constructor(readonly seed: number, readonly datasetSize: number) {
    if (!Number.isSafeInteger(datasetSize) || datasetSize < 1) {
      throw new RangeError(`datasetSize ${datasetSize} must be a positive integer`);
    }
  }

  /** Permutation of 0..N-1 used in `epoch`. */
  epoch(epoch: number): number[] {
    let perm = this.cache.get(epoch);
    if (!perm) {
      perm = Rng.derive(this.seed, EPOCH_STREAM, epoch).shuffle([...Array(this.datasetSize).keys()]);
      this.cache.set(epoch, perm);
      if (this.cache.size > 2) this.cache.delete(this.cache.keys().next().value!);
    }
    return perm;
  }

  /** `count` dataset indices starting at stream position `start`. */
  indices(start: number, count: number): number[] {
    const out: number[] = [];
    for (let k = start; k < start + count; k++) {
      out.push(this.epoch(Math.floor(k / this.datasetSize))[k % this.datasetSize]);
    }
    return out;
  }
}

/** Runs (or resumes) a training run; see the module comment for the guarantees. */
export async function runTraining(opts: TrainingOptions): Promise<TrainingResult> {
  const accum = opts.gradientAccumulationSteps ?? 1;
  const { params, steps, batchSize, seed, checkpoint: ck } = opts;
  for (
    const [k, v] of [["steps", steps], ["batchSize", batchSize], [
      "gradientAccumulationSteps",
      accum,
    ]] as const
  ) {
    if (!Number.isSafeInteger(v) || v < (k === "steps" ? 0 : 1)) throw new RangeError(`${k} ${v} is invalid`);
  }
  if (!Number.isSafeInteger(seed)) throw new RangeError(`seed ${seed} must be a safe integer`);
  if (opts.maxGradNorm !== undefined && !(opts.maxGradNorm > 0)) {
    throw new RangeError(`maxGradNorm ${opts.maxGradNorm} must be positive`);
  }
  if (ck && (!Number.isSafeInteger(ck.every) || ck.every < 1)) {
    throw new RangeError(`checkpoint.every ${ck.every} must be a positive integer`);
  }
  if (opts.resume && !ck) throw new RangeError("resume needs checkpoint.dir to resume from");
  const names = new Set<string>();
  for (const p of params) {
    if (names.has(p.name)) throw new RangeError(`parameter "${p.name}" given twice`);
    names.add(p.name);
    const n = p.shape.reduce((a, b) => a * b, 1);
    if (p.data.length !== n) {
      throw new RangeError(
        `parameter "${p.name}" has ${p.data.length} elements, shape ${p.shape} needs ${n}`,
      );
    }
  }
  const schedule: LrScheduleConfig = {
    name: "constant",
    ...opts.lrSchedule,
    totalSteps: opts.lrSchedule?.totalSteps ?? steps,
  };
  validateSchedule(schedule);
  const optimizer = new AdamW(params, opts.optimizer);
  const sampler = new EpochSampler(seed, opts.datasetSize);
  const runConfig = {
    seed,
    datasetSize: opts.datasetSize,
    batchSize,
    gradientAccumulationSteps: accum,
    steps,
    optimizer: optimizer.config,
    lrSchedule: schedule,
    maxGradNorm: opts.maxGradNorm ?? null,
    params: params.map((p) => ({ name: p.name, shape: p.shape, weightDecay: p.weightDecay !== false })),
    user: ck?.config ?? {},
  };

  let losses: number[] = [];
  let done = 0;
  let resumedFrom: number | null = null;
  if (ck) {
    const latest = await latestCheckpoint(ck.dir);
    if (latest && !opts.resume) {
      throw new CheckpointError(
        `${ck.dir} already holds ${latest}; pass resume: true to continue that run, or use an empty folder`,
      );
    }
    if (latest) {
      const c = await loadCheckpoint(latest);
      restore(c, latest, params, optimizer, runConfig);
      done = resumedFrom = c.step;
      losses = c.losses.slice();
    }
  }
  let lastSaved = resumedFrom ?? -1;
  const save = async () => {
    if (!ck || lastSaved === done) return;
    const state: TrainingCheckpoint = {
      step: done,
      params: Object.fromEntries(params.map((p) => [p.name, { shape: p.shape, data: p.data }])),
      optimizer: optimizer.exportState(),
      config: runConfig,
      losses,
    };
    await saveCheckpoint(ck.dir, state, { keep: ck.keep ?? 3 });
    lastSaved = done;
  };
  const checkAbort = async () => {
    if (!opts.signal?.aborted) return;
    await save();
    throw new DOMException(`training cancelled after step ${done}`, "AbortError");
  };

  const acc = new Map(params.map((p) => [p.name, new Float32Array(p.data.length)]));
  const times = [performance.now()];
  for (let step = done + 1; step <= steps; step++) {
    for (const g of acc.values()) g.fill(0);
    let lossSum = 0;
    for (let micro = 0; micro < accum; micro++) {
      await checkAbort();
      const indices = sampler.indices(((step - 1) * accum + micro) * batchSize, batchSize);
      const rng = Rng.derive(seed, MICRO_STREAM, step, micro);
      const { loss, grads } = await opts.gradients({ step, micro, indices, rng });
      if (!Number.isFinite(loss)) {
        throw new TrainingDivergedError(step, `loss is ${loss} (micro-batch ${micro})`);
      }
      for (const name of Object.keys(grads)) {
        if (!acc.has(name)) throw new Error(`step ${step}: gradient for unknown parameter "${name}"`);
      }
      for (const [name, a] of acc) {
        const g = grads[name];
        if (!g) throw new Error(`step ${step}: the gradient function returned no gradient for "${name}"`);
        if (g.length !== a.length) {
          throw new RangeError(
            `step ${step}: gradient for "${name}" has ${g.length} elements, expected ${a.length}`,
          );
        }
        for (let i = 0; i < a.length; i++) a[i] += g[i];
      }
      lossSum += loss;
    }
    if (accum > 1) {
      for (const a of acc.values()) for (let i = 0; i < a.length; i++) a[i] /= accum;
    }
    const loss = lossSum / accum;
    const grads = Object.fromEntries(acc);
    const gradNorm = opts.maxGradNorm ? clipGradNorm(grads, opts.maxGradNorm) : globalGradNorm(grads);
    if (!Number.isFinite(gradNorm)) {
      const bad = [...acc].find(([, a]) => a.some((x) => !Number.isFinite(x)))?.[0];
      throw new TrainingDivergedError(
        step,
        `gradient norm is ${gradNorm}${bad ? ` ("${bad}" is not finite)` : ""}`,
      );
    }
    const lr = learningRate(optimizer.config.lr, schedule, step - 1);
    optimizer.step(grads, lr);
    const badParam = params.find((p) => p.data.some((x) => !Number.isFinite(x)));
    if (badParam) throw new TrainingDivergedError(step, `parameter "${badParam.name}" became non-finite`);
    losses.push(loss);
    done = step;

    times.push(performance.now());
    if (times.length > RATE_WINDOW + 1) times.shift();
    const elapsed = (times[times.length - 1] - times[0]) / 1000;
    const stepsPerSecond = elapsed > 0 ? (times.length - 1) / elapsed : NaN;
    opts.onProgress?.({
      step,
      steps,
      loss,
      lr,
      gradNorm,
      stepsPerSecond,
      etaSeconds: (steps - step) / stepsPerSecond,
    });
    if (ck && step % ck.every === 0) await save();
  }
  if (done > (resumedFrom ?? 0)) await save();
  return { steps: done, losses, params, resumedFrom };
}

/** Fields that fix the data order and streams: a resume must agree on them to reproduce the run. */
const MUST_MATCH = ["seed", "datasetSize", "batchSize", "gradientAccumulationSteps"] as const;

function restore(
  c: TrainingCheckpoint,
  path: string,
  params: TrainableParam[],
  optimizer: AdamW,
  runConfig: Record<string, unknown>,
): void {
  for (const k of MUST_MATCH) {
    if (c.config[k] !== runConfig[k]) {
      throw new CheckpointError(
        `${path}: was written with ${k} ${JSON.stringify(c.config[k])}, this run has ${
          JSON.stringify(runConfig[k])
        }`,
      );
    }
  }
  const names = new Set(params.map((p) => p.name));
  for (const name of Object.keys(c.params)) {
    if (!names.has(name)) {
      throw new CheckpointError(`${path}: holds parameter "${name}", which this run does not train`);
    }
  }
  for (const p of params) {
    const saved = c.params[p.name];
    if (!saved) throw new CheckpointError(`${path}: has no parameter "${p.name}"`);
    if (saved.shape.join(",") !== p.shape.join(",")) {
      throw new CheckpointError(
        `${path}: parameter "${p.name}" has shape [${saved.shape}], expected [${p.shape}]`,
      );
    }
  }
  if (c.losses.length !== c.step) {
    throw new CheckpointError(`${path}: ${c.losses.length} losses recorded for step ${c.step}`);
  }
  optimizer.importState(c.optimizer);
  for (const p of params) p.data.set(c.params[p.name].data);
}
