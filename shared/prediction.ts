/**
 * Predictions (`POST /v1/predictions`): the input, written once with zod — the edge validates requests with
 * it, workers read the parsed value, and `/openapi.json` is generated from it. Field names are API.md's;
 * defaults are the pipeline's.
 *
 * @example
 * ```ts
 * const input = PredictionInput.parse({ prompt: "a red circle", seed: 1 });
 * input.steps; // 20
 * ```
 */
import { z } from "zod";
import { JobFields, WebhookEventsFilter, WebhookUrl } from "./jobs.ts";
import { BlobRef } from "./blob_store.ts";
import { LeasedAdapter } from "./adapters.ts";
import { BlobName } from "./methods/common.ts";

export const SCHEDULERS = ["ddim", "ddpm", "euler", "euler_a", "dpmpp_2m"] as const;

const Scale = z.number().min(-10).max(10);

/** Most regions one prediction may have (each costs a UNet evaluation per step). */
export const MAX_REGIONS = 8;

export const PredictionInput = z.object({
  prompt: z.string().max(2000),
  negative_prompt: z.string().max(2000).default(""),
  num_outputs: z.number().int().min(1).max(16).default(1),
  steps: z.number().int().min(1).max(500).default(20),
  /** Classifier-free guidance; absent: 7.5, or 2.0 (Prompt-Free's default) with `reference_image`. */
  guidance_scale: z.number().min(0).max(50).optional(),
  /** Guidance rescale phi (diffusers' guidance_rescale): 0 is plain guidance; 0.7 advised for zero-SNR models. */
  guidance_rescale: z.number().min(0).max(1).default(0),
  scheduler: z.enum(SCHEDULERS).default("ddim"),
  seed: z.number().int().min(0).max(2 ** 53 - 1).optional(),
  width: z.number().int().min(8).max(4096).optional(),
  height: z.number().int().min(8).max(4096).optional(),
  /** img2img: an uploaded file id, and how much of the schedule to run (absent: 0.8, or 1 with a mask). */
  image: z.string().optional(),
  strength: z.number().gt(0).max(1).optional(),
  /**
   * Inpainting (with `image`, the same size): an uploaded file id of a mask. Where it is transparent (alpha <
   * 0.5), or, in an opaque mask, white (luminance >= 0.5), the image is repainted; elsewhere its pixels are
   * kept, and its latents are blended back after every step so the repaint agrees with them.
   */
  mask: z.string().optional(),
  adapters: z.array(z.object({ id: z.string(), scale: Scale.default(1) })).max(16).default([]),
  /**
   * Concept sliders, each at its scale (any real number, typically -5..5); a slider is off (scale 0) while the
   * sampler's timestep is above `start_step` (0..1000, default 800: the first 20% of the schedule, as the
   * sliders repo's SD 1.x `start_noise`), so the image keeps its structure. All run in one UNet pass per step.
   */
  sliders: z.array(
    z.object({ id: z.string(), scale: Scale, start_step: z.number().int().min(0).max(1000).optional() }),
  )
    .max(64).default([]),
  /** Prompt-Free: a file id of a reference image whose SeeCoder embeddings replace the text. */
  reference_image: z.string().optional(),
  regions: z.array(z.object({
    box: z.tuple([z.number(), z.number(), z.number(), z.number()])
      .refine(([x0, y0, x1, y1]) => [x0, y0, x1, y1].every((v) => v >= 0 && v <= 1) && x0 < x1 && y0 < y1, {
        message: "box is [x0, y0, x1, y1] in 0..1 with x0 < x1 and y0 < y1",
      }),
    prompt: z.string().max(2000),
    adapters: z.array(z.string()).max(16).optional(),
  })).max(MAX_REGIONS).default([]),
}).strict();
export type PredictionInput = z.infer<typeof PredictionInput>;

/** An image of a leased prediction: a name in the job's `blobs`, or a blob reference itself. */
const LeasedImage = z.union([BlobName, BlobRef]);

/**
 * What a worker leases for a prediction: PredictionInput's fields, with `prompt` routed (`<adapter-name>`
 * replaced by the adapter's trigger phrase), adapters and sliders described (their weights in `blobs`), and
 * the adapters that regions name described in `region_adapters`.
 */
export const PredictionWork = z.object({
  ...PredictionInput.shape,
  image: LeasedImage.optional(),
  mask: LeasedImage.optional(),
  reference_image: LeasedImage.optional(),
  adapters: z.array(LeasedAdapter.extend({ scale: Scale.default(1) })).default([]),
  sliders: z.array(
    LeasedAdapter.extend({ scale: Scale, start_step: z.number().int().min(0).optional() }),
  ).default([]),
  region_adapters: z.array(LeasedAdapter).default([]),
}).strict();
export type PredictionWork = z.infer<typeof PredictionWork>;

export const CreatePredictionRequest = z.object({
  base_model: z.string().min(1).max(200),
  input: PredictionInput,
  webhook: WebhookUrl.optional(),
  webhook_events_filter: WebhookEventsFilter.optional(),
}).strict();
export type CreatePredictionRequest = z.infer<typeof CreatePredictionRequest>;

export const Prediction = z.object({
  ...JobFields,
  base_model: z.string(),
  input: z.record(z.string(), z.unknown()),
  /** URLs of the output images (PNG) once succeeded. */
  output: z.array(z.string()).nullable(),
  /** Adapters applied, including those the prompt pulled in by naming their token. */
  adapters: z.array(z.object({ id: z.string(), scale: z.number(), routed: z.boolean() })),
});
export type Prediction = z.infer<typeof Prediction>;
