/**
 * What every method's run takes besides its own settings: where it writes, the class-image cache, checkpoints
 * and resume, progress and log callbacks, cancellation.
 *
 * @example
 * ```ts
 * interface MyMethodOptions extends MethodRunOptions { config: MyConfig }
 * ```
 */
import type { ProgressEvent } from "../training/loop.ts";

export interface MethodRunOptions {
  /** Base model folder (diffusers layout). */
  model: string;
  /** Output folder: the method's files plus `checkpoints/`. */
  out: string;
  /** Root of the class-image cache (`<cacheDir>/class_images/<key>/`); default `out`. */
  cacheDir?: string;
  checkpointEvery?: number;
  resume?: boolean;
  onProgress?: (e: ProgressEvent) => void;
  onLog?: (line: string) => void;
  signal?: AbortSignal;
}

/**
 * The training loop's options that come from the run (`runTraining({ ...runLoopOptions(o, "dreambooth", cfg),
 * ... })`): checkpoints under `<out>/checkpoints` (the last two kept, the run's settings in each), resume,
 * progress and cancellation.
 */
export function runLoopOptions(o: MethodRunOptions, method: string, config: object) {
  return {
    checkpoint: o.checkpointEvery
      ? { dir: `${o.out}/checkpoints`, every: o.checkpointEvery, keep: 2, config: { method, ...config } }
      : undefined,
    resume: o.resume,
    onProgress: o.onProgress,
    signal: o.signal,
  };
}
