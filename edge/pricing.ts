/**
 * The price table, in credits, read from the method registry (`shared/methods.ts`): predictions cost per
 * image x step (x 512x512 tiles for large images), trainings per step x batch size at their method's price
 * (full fine-tuning costs more than LoRA), merges their method's flat price. A job reserves its price when
 * accepted, settles it on success and is refunded on failure or cancel.
 *
 * @example
 * ```ts
 * predictionPrice({ num_outputs: 2, steps: 20 }); // 40
 * trainingPrice("dreambooth", DreamboothInput.parse({ images: "f", steps: 500 })); // 5000
 * ```
 */
import {
  MERGE_METHOD_REGISTRY,
  type MergeMethod,
  perStepPrice,
  TRAINING_METHOD_REGISTRY,
  TRAINING_METHODS,
  type TrainingInputOf,
  type TrainingMethod,
  withDefaultSteps,
} from "../shared/methods.ts";

const PREDICTION = { per_image_step: 1, tile_pixels: 512 * 512 } as const;

/**
 * The table `GET /v1/account` shows: per-step prices by method (a method's other prices, e.g. DreamBooth's
 * `per_step_full`, as `<method>_full`), merges by method.
 */
export const PRICES = {
  prediction: PREDICTION,
  training: {
    per_step: Object.fromEntries(
      TRAINING_METHODS.flatMap((m) =>
        Object.entries(TRAINING_METHOD_REGISTRY[m].prices as Record<string, number>).map(([k, v]) => [
          k === "per_step" ? m : `${m}${k.slice("per_step".length)}`,
          v,
        ])
      ),
    ),
  },
  merge: {
    per_merge: Object.fromEntries(Object.entries(MERGE_METHOD_REGISTRY).map(([m, e]) => [m, e.price])),
  },
};

export function predictionPrice(
  input: { num_outputs: number; steps: number; width?: number; height?: number },
): number {
  const tiles = input.width && input.height
    ? Math.max(1, Math.ceil((input.width * input.height) / PREDICTION.tile_pixels))
    : 1;
  return input.num_outputs * input.steps * tiles * PREDICTION.per_image_step;
}

/** steps (the method's default when absent) x batch size x the method's per-step price for this input. */
export function trainingPrice<M extends TrainingMethod>(method: M, input: TrainingInputOf<M>): number {
  const { steps, batch_size } = withDefaultSteps(method, input) as { steps: number; batch_size: number };
  return steps * batch_size * perStepPrice(method, input);
}

export const mergePrice = (method: MergeMethod): number => MERGE_METHOD_REGISTRY[method].price;
