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
