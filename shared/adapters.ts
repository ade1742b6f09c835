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
import { BlobRef } from "./blob_store.ts";
import { AdapterName, ClassWord, Token } from "./methods/common.ts";
import { TRAINING_METHODS } from "./methods.ts";

export const AdapterKind = z.enum(["concept", "slider", "library"]);
export type AdapterKind = z.infer<typeof AdapterKind>;
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
  method: z.enum([...TRAINING_METHODS, "lora"]).default("lora"),
  token: z.string().min(1).max(64).optional(),
  class_word: z.string().max(100).optional(),
}).strict();
export type ImportAdapterRequest = z.infer<typeof ImportAdapterRequest>;

/**
 * What an adapter is, as the worker that made it reports it with `complete` (a training's or merge's output):
 * the edge stores this in the adapter's record rather than guessing it from the request. `method` is the
 * training method, or `merge:<method>` for a merge.
 *
 * @example
 * ```ts
 * AdapterDescriptor.parse({ kind: "concept", method: "dreambooth", tokens: ["sks"], class_word: "dog" });
 * ```
 */
export const AdapterDescriptor = z.object({
  kind: AdapterKind,
  method: z.string().min(1).max(100),
  /** Every token the adapter brings, in order (several for jointly trained or merged Custom Diffusion). */
  tokens: z.array(Token).max(64),
  class_word: ClassWord.nullable(),
  /** A full fine-tune (DreamBooth `mode: "full"`): a whole model, used at scale 1, one per prediction. */
  full_model: z.boolean().default(false),
}).strict();
export type AdapterDescriptor = z.infer<typeof AdapterDescriptor>;

/**
 * An adapter in a leased job: its id (its weights are `blobs[id]` or `blobs["adapter:" + id]`, or `blob`), and
 * what the edge knows of it. The weights decide what it is on the worker; the rest is for logs and prompts.
 */
export const LeasedAdapter = z.object({
  id: z.string(),
  name: z.string().optional(),
  kind: AdapterKind.optional(),
  method: z.string().optional(),
  token: z.string().nullable().optional(),
  tokens: z.array(z.string()).optional(),
  class_word: z.string().nullable().optional(),
  full_model: z.boolean().optional(),
  blob: BlobRef.optional(),
});
export type LeasedAdapter = z.infer<typeof LeasedAdapter>;

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
