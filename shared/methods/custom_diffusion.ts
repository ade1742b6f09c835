/**
 * Custom Diffusion (Kumari et al., CVPR 2023), the shared part of its registry entry: the `custom_diffusion`
 * input (one concept, or several trained jointly with `concepts`), what a worker leases, the price and the
 * adapter it makes. The run is `gpu-worker/methods/custom_diffusion.ts`.
 *
 * @example
 * ```ts
 * const input = CustomDiffusionInput.parse({ images: ["file_1"] });
 * customDiffusion.defaultSteps(input); // 250 (500 for joint training, as the official script)
 * ```
 */
import { z } from "zod";
import {
  ClassWord,
  COMMON_TRAINING_FIELDS,
  ImageNames,
  Images,
  Token,
  TRAINING_WORK_FIELDS,
} from "./common.ts";
import { defineTrainingMethod } from "./entry.ts";

/** The official script's steps: 250 for one concept, 500 for joint training. */
export const CUSTOM_DIFFUSION_STEPS = { single: 250, joint: 500 } as const;

const Concept = z.object({ images: Images, modifier_token: Token, class_word: ClassWord }).strict();
const oneOrMore = {
  message: "give images (one concept) or concepts (joint training)",
  path: ["images"],
};

export const CustomDiffusionInput = z.object({
  images: Images.optional(),
  ...COMMON_TRAINING_FIELDS,
  /** Default 250 for one concept, 500 for joint training (`concepts`), as the official script. */
  steps: COMMON_TRAINING_FIELDS.steps.optional(),
  batch_size: COMMON_TRAINING_FIELDS.batch_size.unwrap().default(2),
  modifier_token: Token.default("<new1>"),
  initializer_token: Token.default("ktn"),
  class_word: ClassWord.optional(),
  freeze_model: z.enum(["crossattn_kv", "crossattn"]).default("crossattn_kv"),
  regularization_images: Images.optional(),
  augment: z.boolean().default(true),
  hflip: z.boolean().default(false),
  with_prior_preservation: z.boolean().optional(),
  num_class_images: z.number().int().min(1).max(1000).default(200),
  prior_loss_weight: z.number().min(0).max(100).default(1),
  /** Keep this fraction of each layer's singular values of the K/V change (the paper: 0.6); off when absent. */
  compress: z.number().gt(0).max(1).optional(),
  concepts: z.array(Concept).min(1).max(16).optional(),
}).strict().refine((v) => v.images !== undefined || v.concepts !== undefined, oneOrMore);

/** The leased input: steps resolved, every image list as blob names (captioned by `captions`). */
export const CustomDiffusionWork = z.object({
  ...CustomDiffusionInput.shape,
  ...TRAINING_WORK_FIELDS,
  images: ImageNames.optional(),
  steps: COMMON_TRAINING_FIELDS.steps,
  regularization_images: ImageNames.optional(),
  concepts: z.array(Concept.extend({ images: ImageNames })).min(1).max(16).optional(),
}).strict().refine((v) => v.images !== undefined || v.concepts !== undefined, oneOrMore);

export const customDiffusion = defineTrainingMethod({
  name: "custom_diffusion",
  title: "Custom Diffusion (Kumari et al., CVPR 2023): cross-attention K/V and a modifier token per concept",
  input: CustomDiffusionInput,
  work: CustomDiffusionWork,
  defaultSteps: (input) =>
    (input.concepts?.length ?? 1) > 1 ? CUSTOM_DIFFUSION_STEPS.joint : CUSTOM_DIFFUSION_STEPS.single,
  prices: { per_step: 8 },
  adapterKind: "concept",
});
