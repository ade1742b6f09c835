/**
 * DreamBooth (Ruiz et al., CVPR 2023), the shared part of its registry entry: the `dreambooth` input of
 * `POST /v1/trainings` with METHODS.md's defaults, what a worker leases, the price and the adapter it makes.
 * The run is `gpu-worker/methods/dreambooth.ts`.
 *
 * @example
 * ```ts
 * DreamboothInput.parse({ images: ["file_1"] }).steps; // 500
 * dreambooth.priceOf!(DreamboothInput.parse({ images: "f", mode: "full" })); // "per_step_full"
 * ```
 */
import { z } from "zod";
import { ClassWord, COMMON_TRAINING_FIELDS, Images, Token, TRAINING_WORK_FIELDS } from "./common.ts";
import { defineTrainingMethod } from "./entry.ts";

export const DREAMBOOTH_STEPS = 500;

export const DreamboothInput = z.object({
  images: Images,
  ...COMMON_TRAINING_FIELDS,
  steps: COMMON_TRAINING_FIELDS.steps.default(DREAMBOOTH_STEPS),
  token: Token.default("sks"),
  class_word: ClassWord.optional(),
  mode: z.enum(["lora", "full"]).default("lora"),
  rank: z.number().int().min(1).max(256).default(4),
  /** Default: on when `class_word` is given (METHODS.md), off without one. */
  with_prior_preservation: z.boolean().optional(),
  num_class_images: z.number().int().min(1).max(1000).default(100),
  prior_loss_weight: z.number().min(0).max(100).default(1),
  train_text_encoder: z.boolean().default(false),
}).strict();

/** The leased input: the same fields, images as blob names with their captions. */
export const DreamboothWork = DreamboothInput.extend(TRAINING_WORK_FIELDS);

export const dreambooth = defineTrainingMethod({
  name: "dreambooth",
  title: "DreamBooth (Ruiz et al., CVPR 2023): a subject bound to a rare token, LoRA or full fine-tuning",
  input: DreamboothInput,
  work: DreamboothWork,
  defaultSteps: () => DREAMBOOTH_STEPS,
  // Full fine-tuning updates (and stores) every UNet weight: four times LoRA's price.
  prices: { per_step: 10, per_step_full: 40 },
  priceOf: (input) => input.mode === "full" ? "per_step_full" : "per_step",
  adapterKind: "concept",
});
