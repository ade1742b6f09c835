/**
 * Adapters: trained concepts, sliders and merges (`/v1/adapters`), and imports of uploaded safetensors.
 * `triggers` are the words that pull an adapter into a prediction when the prompt names them.
 *
 * @example
 * ```ts
 * ImportAdapterRequest.parse({ file: "file_1", base_model: "tiny-shapes", name: "rex" });
 * ```
 */
import { z } from "zod";
import { AdapterName } from "./training.ts";

export const AdapterKind = z.enum(["concept", "slider", "library"]);
export const WEIGHT_FORMATS = ["diffusers", "peft", "kohya"] as const;
export const WeightFormat = z.enum(WEIGHT_FORMATS);
export type WeightFormat = z.infer<typeof WeightFormat>;

export const Adapter = z.object({
  id: z.string(),
  name: z.string(),
  kind: AdapterKind,
  method: z.string(),
  base_model: z.string(),
  /** Words of the prompt that pull this adapter in: `<name>` and the trained token. */
  triggers: z.array(z.string()),
  token: z.string().nullable(),
  class_word: z.string().nullable(),
  /**
   * A full fine-tune (DreamBooth `mode: "full"`): the weights are a whole UNet (`unet.*`), predictions that use
   * it run on that model (scale 1 only, at most one per prediction), and it downloads as diffusers only.
   */
  full_model: z.boolean(),
  /** The job that made it (a training or merge), or null when imported. */
  source: z.object({ kind: z.enum(["training", "merge", "import"]), id: z.string().nullable() }),
  size: z.number().int(),
  checksums: z.object({ sha256: z.string() }),
  metrics: z.record(z.string(), z.number()),
  created_at: z.string(),
  urls: z.object({ get: z.string(), weights: z.string() }),
});
export type Adapter = z.infer<typeof Adapter>;

export const ImportAdapterRequest = z.object({
  /** An uploaded safetensors file id. */
  file: z.string(),
  base_model: z.string().min(1).max(200),
  name: AdapterName,
  method: z.enum(["dreambooth", "custom_diffusion", "concept_slider", "cidm", "lora"]).default("lora"),
  token: z.string().min(1).max(64).optional(),
  class_word: z.string().max(100).optional(),
}).strict();
export type ImportAdapterRequest = z.infer<typeof ImportAdapterRequest>;

/**
 * Why a prediction cannot use these full fine-tunes (the adapters of its request that are whole models), or
 * null when it can: at most one, at scale 1. The edge answers 422 with it; a worker fails the job with it.
 *
 * @example
 * ```ts
 * fullModelConflict([{ id: "adp_1", scale: 0.5 }]); // 'adapter "adp_1" is a full fine-tune ... got 0.5'
 * ```
 */
export function fullModelConflict(full: { id: string; scale: number }[]): string | null {
  if (full.length > 1) {
    return `adapters ${full.map((a) => `"${a.id}"`).join(" and ")} are full fine-tunes (whole models); ` +
      `a prediction can use at most one`;
  }
  if (full.length && full[0].scale !== 1) {
    return `adapter "${full[0].id}" is a full fine-tune (a whole model): it applies at scale 1, got ${
      full[0].scale
    }`;
  }
  return null;
}
