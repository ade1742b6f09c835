/**
 * Trainings (`POST /v1/trainings`) and merges (`POST /v1/merges`): one input schema per method with
 * METHODS.md's defaults (the official implementations'), unknown fields refused by name. Learning rates are
 * left to the method when absent because their defaults depend on the mode (LoRA 1e-4, full 5e-6, ...).
 *
 * @example
 * ```ts
 * const req = CreateTrainingRequest.parse({
 *   method: "dreambooth", base_model: "tiny-shapes", destination: "rex", input: { images: ["file_1"] },
 * });
 * req.input.steps; // 500
 * ```
 */
import { z } from "zod";
import { JobFields, WebhookEventsFilter, WebhookUrl } from "./jobs.ts";

export const TRAINING_METHODS = ["dreambooth", "custom_diffusion", "concept_slider", "cidm"] as const;
export const TrainingMethod = z.enum(TRAINING_METHODS);
export type TrainingMethod = z.infer<typeof TrainingMethod>;

const FileId = z.string().min(1).max(100);
/** Uploaded image file ids, or one zip file id (its images, with optional `.txt` captions). */
const Images = z.union([FileId, z.array(FileId).min(1).max(200)]);
/** An adapter's name; a prompt naming `<name>` pulls the adapter in. */
export const AdapterName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, {
  message: "1-64 characters: letters, digits, _ . - (not first)",
});
const Token = z.string().min(1).max(64).regex(/^\S+$/, { message: "a token is one word" });

const common = {
  steps: z.number().int().min(1).max(100_000),
  learning_rate: z.number().positive().max(1).optional(),
  batch_size: z.number().int().min(1).max(64).default(1),
  resolution: z.number().int().min(8).max(2048).optional(),
  seed: z.number().int().min(0).max(2 ** 53 - 1).optional(),
};

export const DreamboothInput = z.object({
  images: Images,
  ...common,
  steps: common.steps.default(500),
  token: Token.default("sks"),
  class_word: z.string().max(100).optional(),
  mode: z.enum(["lora", "full"]).default("lora"),
  rank: z.number().int().min(1).max(256).default(4),
  /** Default: on when `class_word` is given (METHODS.md), off without one. */
  with_prior_preservation: z.boolean().optional(),
  num_class_images: z.number().int().min(1).max(1000).default(100),
  prior_loss_weight: z.number().min(0).max(100).default(1),
  train_text_encoder: z.boolean().default(false),
}).strict();

export const CustomDiffusionInput = z.object({
  images: Images.optional(),
  ...common,
  /** Default 250 for one concept, 500 for joint training (`concepts`), as the official script. */
  steps: common.steps.optional(),
  batch_size: common.batch_size.unwrap().default(2),
  modifier_token: Token.default("<new1>"),
  initializer_token: Token.default("ktn"),
  class_word: z.string().max(100).optional(),
  freeze_model: z.enum(["crossattn_kv", "crossattn"]).default("crossattn_kv"),
  regularization_images: Images.optional(),
  augment: z.boolean().default(true),
  hflip: z.boolean().default(false),
  with_prior_preservation: z.boolean().optional(),
  num_class_images: z.number().int().min(1).max(1000).default(200),
  prior_loss_weight: z.number().min(0).max(100).default(1),
  /** Keep this fraction of each layer's singular values of the K/V change (the paper: 0.6); off when absent. */
  compress: z.number().gt(0).max(1).optional(),
  concepts: z.array(
    z.object({ images: Images, modifier_token: Token, class_word: z.string().max(100) }).strict(),
  )
    .min(1).max(16).optional(),
}).strict().refine((v) => v.images !== undefined || v.concepts !== undefined, {
  message: "give images (one concept) or concepts (joint training)",
  path: ["images"],
});

const FilePair = z.object({ low: FileId, high: FileId, scale: z.number().min(-10).max(10).default(1) })
  .strict();
export const ConceptSliderInput = z.object({
  images: Images.optional(),
  ...common,
  steps: common.steps.default(1000),
  kind: z.enum(["text", "visual"]).default("text"),
  target: z.string().max(500).default(""),
  positive: z.string().max(500).optional(),
  negative: z.string().max(500).optional(),
  neutral: z.string().max(500).optional(),
  action: z.enum(["enhance", "erase"]).default("enhance"),
  guidance_scale: z.number().min(0).max(50).default(4),
  attributes: z.array(z.string().max(200)).max(64).default([]),
  pairs: z.array(FilePair).max(64).optional(),
  rank: z.number().int().min(1).max(256).default(4),
  alpha: z.number().positive().max(256).default(1),
  train_method: z.enum(["noxattn", "c3lier", "xattn", "full"]).default("noxattn"),
}).strict().refine((v) => v.kind === "visual" ? (v.pairs?.length ?? 0) > 0 : v.positive !== undefined, {
  message: "a text slider needs positive (and negative); a visual slider needs pairs",
  path: ["kind"],
});

export const CidmInput = z.object({
  images: Images,
  ...common,
  steps: common.steps.default(500),
  library: AdapterName,
  tokens: z.array(Token).min(1).max(8).default(["<c1>"]),
  class_word: z.string().max(100).optional(),
  orthogonal_weight: z.number().min(0).max(100).default(0.1),
  shared_weight: z.number().min(0).max(100).default(0.1),
}).strict();

const jobOptions = { webhook: WebhookUrl.optional(), webhook_events_filter: WebhookEventsFilter.optional() };
const head = { base_model: z.string().min(1).max(200), destination: AdapterName };

export const CreateTrainingRequest = z.discriminatedUnion("method", [
  z.object({ method: z.literal("dreambooth"), ...head, input: DreamboothInput, ...jobOptions }).strict(),
  z.object({ method: z.literal("custom_diffusion"), ...head, input: CustomDiffusionInput, ...jobOptions })
    .strict(),
  z.object({ method: z.literal("concept_slider"), ...head, input: ConceptSliderInput, ...jobOptions })
    .strict(),
  z.object({ method: z.literal("cidm"), ...head, input: CidmInput, ...jobOptions }).strict(),
]);
export type CreateTrainingRequest = z.infer<typeof CreateTrainingRequest>;

export const TrainingOutput = z.object({ adapter: z.string(), weights: z.string() });

export const Training = z.object({
  ...JobFields,
  method: TrainingMethod,
  base_model: z.string(),
  destination: z.string(),
  input: z.record(z.string(), z.unknown()),
  /** The adapter the training made, and where to download its weights. */
  output: TrainingOutput.nullable(),
});
export type Training = z.infer<typeof Training>;

export const MERGE_METHODS = ["custom_diffusion", "linear", "cidm"] as const;
export const CreateMergeRequest = z.object({
  method: z.enum(MERGE_METHODS),
  adapters: z.array(z.union([z.string(), z.object({ id: z.string(), weight: z.number().min(-10).max(10) })]))
    .min(2).max(16),
  destination: AdapterName,
  /**
   * custom_diffusion: `sequence` (default) constrains every position of the concepts' prompts, as a strong
   * penalty; `exact` is the paper's hard constraint on the target words (and EOS).
   */
  mode: z.enum(["sequence", "exact"]).optional(),
  ...jobOptions,
}).strict();
export type CreateMergeRequest = z.infer<typeof CreateMergeRequest>;

export const Merge = z.object({
  ...JobFields,
  method: z.enum(MERGE_METHODS),
  base_model: z.string(),
  destination: z.string(),
  input: z.record(z.string(), z.unknown()),
  output: TrainingOutput.nullable(),
});
export type Merge = z.infer<typeof Merge>;
