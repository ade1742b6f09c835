/**
 * The price table, in credits. Predictions cost per image x step (x 512x512 tiles for large images),
 * trainings per step (x batch size; full fine-tuning costs more than LoRA), merges a flat price. A job
 * reserves its price when accepted, settles it on success and is refunded on failure or cancel.
 *
 * @example
 * ```ts
 * predictionPrice({ num_outputs: 2, steps: 20 }); // 40
 * trainingPrice("dreambooth", { steps: 500, batch_size: 1, mode: "lora" }); // 5000
 * ```
 */
export const PRICES = {
  prediction: { per_image_step: 1, tile_pixels: 512 * 512 },
  training: {
    per_step: { dreambooth: 10, dreambooth_full: 40, custom_diffusion: 8, concept_slider: 6, cidm: 10 },
  },
  merge: { flat: 50 },
} as const;

export function predictionPrice(
  input: { num_outputs: number; steps: number; width?: number; height?: number },
): number {
  const tiles = input.width && input.height
    ? Math.max(1, Math.ceil((input.width * input.height) / PRICES.prediction.tile_pixels))
    : 1;
  return input.num_outputs * input.steps * tiles * PRICES.prediction.per_image_step;
}

export function trainingPrice(
  method: keyof typeof PRICES.training.per_step,
  input: { steps?: number; batch_size: number; mode?: string; concepts?: unknown[] },
): number {
  const key = method === "dreambooth" && input.mode === "full" ? "dreambooth_full" : method;
  // Custom Diffusion's default depends on the run: 250 steps for one concept, 500 jointly.
  const steps = input.steps ?? ((input.concepts?.length ?? 1) > 1 ? 500 : 250);
  return steps * input.batch_size * PRICES.training.per_step[key];
}

export const mergePrice = (): number => PRICES.merge.flat;
