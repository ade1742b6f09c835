/**
 * Learning-rate schedules with diffusers' `get_scheduler` names and formulas, as pure functions of the step.
 *
 * `step` is the scheduler's count of updates already made (0 for the first update), the order of diffusers'
 * training scripts (`optimizer.step(); lr_scheduler.step()`): with warmup, the very first update runs at lr 0.
 *
 * @example
 * ```ts
 * const cfg = { name: "cosine", warmupSteps: 100, totalSteps: 1000 } as const;
 * learningRate(1e-4, cfg, 550); // 5e-5: halfway down the half-cosine
 * ```
 */

/** The schedule names diffusers' `get_scheduler` accepts (all but `piecewise_constant`). */
export const LR_SCHEDULE_NAMES = [
  "constant",
  "constant_with_warmup",
  "linear",
  "cosine",
  "cosine_with_restarts",
  "polynomial",
] as const;

export type LrScheduleName = typeof LR_SCHEDULE_NAMES[number];

/** A schedule; `totalSteps` is required by the decaying ones (diffusers' `num_training_steps`). */
export interface LrScheduleConfig {
  name: LrScheduleName;
  /** Linear warmup from 0 over this many steps (ignored by `constant`, as in diffusers). Default 0. */
  warmupSteps?: number;
  totalSteps?: number;
  /** `cosine_with_restarts`: number of hard restarts (diffusers' default 1). */
  numCycles?: number;
  /** `polynomial`: power (default 1) and final lr (default 1e-7). */
  power?: number;
  lrEnd?: number;
}

/** Learning rate for update number `step` (0-based) starting from `baseLr`. */
export function learningRate(baseLr: number, config: LrScheduleConfig, step: number): number {
  return baseLr * lrMultiplier(config, step, baseLr);
}

/**
 * The factor diffusers' LambdaLR multiplies the base lr by at `step`. `baseLr` is only needed by
 * `polynomial`, whose floor `lrEnd` is absolute.
 */
export function lrMultiplier(config: LrScheduleConfig, step: number, baseLr?: number): number {
  validateSchedule(config);
  const warmup = config.warmupSteps ?? 0;
  const total = config.totalSteps ?? 0;
  const warm = (s: number) => s / Math.max(1, warmup);
  switch (config.name) {
    case "constant":
      return 1;
    case "constant_with_warmup":
      return step < warmup ? warm(step) : 1;
    case "linear":
      if (step < warmup) return warm(step);
      return Math.max(0, (total - step) / Math.max(1, total - warmup));
    case "cosine": {
      if (step < warmup) return warm(step);
      const progress = (step - warmup) / Math.max(1, total - warmup);
      return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * 0.5 * 2 * progress)));
    }
    case "cosine_with_restarts": {
      if (step < warmup) return warm(step);
      const progress = (step - warmup) / Math.max(1, total - warmup);
      if (progress >= 1) return 0;
      const cycles = config.numCycles ?? 1;
      return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * ((cycles * progress) % 1))));
    }
    case "polynomial": {
      if (baseLr === undefined) throw new Error("lr schedule polynomial: needs the base learning rate");
      const lrEnd = config.lrEnd ?? 1e-7, power = config.power ?? 1;
      if (!(baseLr > lrEnd)) {
        throw new RangeError(
          `lr schedule polynomial: lrEnd (${lrEnd}) must be below the initial lr (${baseLr})`,
        );
      }
      if (step < warmup) return warm(step);
      if (step > total) return lrEnd / baseLr;
      const remaining = 1 - (step - warmup) / (total - warmup);
      return ((baseLr - lrEnd) * remaining ** power + lrEnd) / baseLr;
    }
  }
}

/** Throws a RangeError naming the problem for an unknown name or a missing/invalid step count. */
export function validateSchedule(config: LrScheduleConfig): void {
  if (!(LR_SCHEDULE_NAMES as readonly string[]).includes(config.name)) {
    throw new RangeError(
      `unknown lr schedule "${config.name}", expected one of ${LR_SCHEDULE_NAMES.join(", ")}`,
    );
  }
  const warmup = config.warmupSteps ?? 0;
  if (!Number.isSafeInteger(warmup) || warmup < 0) {
    throw new RangeError(`lr schedule ${config.name}: warmupSteps ${warmup} must be a non-negative integer`);
  }
  if (config.name === "constant" || config.name === "constant_with_warmup") return;
  const total = config.totalSteps;
  if (total === undefined || !Number.isSafeInteger(total) || total < 0) {
    throw new RangeError(
      `lr schedule ${config.name}: needs totalSteps (a non-negative integer), got ${total}`,
    );
  }
  if (config.name === "polynomial" && total <= warmup) {
    throw new RangeError(`lr schedule polynomial: totalSteps (${total}) must exceed warmupSteps (${warmup})`);
  }
}
