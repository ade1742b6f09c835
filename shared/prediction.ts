/**
 * The prediction input (`POST /v1/predictions` `input`), written once with zod: the edge validates requests
 * with it, workers read the parsed value, and `/openapi.json` will be generated from it. Field names are
 * API.md's; defaults are the pipeline's.
 *
 * @example
 * ```ts
 * const input = PredictionInput.parse({ prompt: "a red circle", seed: 1 });
 * input.steps; // 20
 * ```
 */
import { z } from "zod";

export const SCHEDULERS = ["ddim", "ddpm", "euler", "euler_a", "dpmpp_2m"] as const;

export const PredictionInput = z.object({
  prompt: z.string().max(2000),
  negative_prompt: z.string().max(2000).default(""),
  num_outputs: z.number().int().min(1).max(16).default(1),
  steps: z.number().int().min(1).max(500).default(20),
  guidance_scale: z.number().min(0).max(50).default(7.5),
  scheduler: z.enum(SCHEDULERS).default("ddim"),
  seed: z.number().int().min(0).max(2 ** 53 - 1).optional(),
  width: z.number().int().min(8).max(4096).optional(),
  height: z.number().int().min(8).max(4096).optional(),
  /** img2img: an uploaded file id, and how much of the schedule to run. */
  image: z.string().optional(),
  strength: z.number().gt(0).max(1).default(0.8),
  adapters: z.array(z.object({ id: z.string(), scale: z.number().min(-10).max(10).default(1) })).default([]),
}).strict();

export type PredictionInput = z.infer<typeof PredictionInput>;
