/**
 * Trainings (`POST /v1/trainings`) and merges (`POST /v1/merges`): the request of each training method is
 * built from its registry entry (`shared/methods.ts`: the input schema with METHODS.md's defaults, unknown
 * fields refused by name), and what a merge job leases. Learning rates are left to the method when absent
 * because their defaults depend on the mode (LoRA 1e-4, full 5e-6, ...).
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
import { AdapterName } from "./methods/common.ts";
import {
  MERGE_METHODS,
  MergeMethod,
  TRAINING_METHOD_REGISTRY,
  TRAINING_METHODS,
  type TrainingInputOf,
  TrainingMethod,
} from "./methods.ts";
import { LeasedAdapter } from "./adapters.ts";

export { AdapterName, MERGE_METHODS, TRAINING_METHODS, TrainingMethod };
export { DreamboothInput } from "./methods/dreambooth.ts";
export { CustomDiffusionInput } from "./methods/custom_diffusion.ts";
export { ConceptSliderInput } from "./methods/concept_slider.ts";
export { CidmInput } from "./methods/cidm.ts";

const jobOptions = { webhook: WebhookUrl.optional(), webhook_events_filter: WebhookEventsFilter.optional() };
const head = { base_model: z.string().min(1).max(200), destination: AdapterName };

/** One method's request: its name, the common head, and its input. */
const requestOf = (method: TrainingMethod) =>
  z.object({
    method: z.literal(method),
    ...head,
    input: TRAINING_METHOD_REGISTRY[method].input as z.ZodType,
    ...jobOptions,
  }).strict();

/** A training request of one method, typed by that method's input. */
export type CreateTrainingRequest = {
  [M in TrainingMethod]: {
    method: M;
    base_model: string;
    destination: string;
    input: TrainingInputOf<M>;
    webhook?: string;
    webhook_events_filter?: z.output<typeof WebhookEventsFilter>;
  };
}[TrainingMethod];

/** `POST /v1/trainings`: one request shape per registered method, told apart by `method`. */
export const CreateTrainingRequest = z.discriminatedUnion(
  "method",
  TRAINING_METHODS.map(requestOf) as unknown as [ReturnType<typeof requestOf>],
) as unknown as z.ZodType<CreateTrainingRequest>;

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

export const CreateMergeRequest = z.object({
  method: MergeMethod,
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

/** What a merge job leases: the adapters with their weights (`blobs[id]`) and merge weights. */
export const MergeWork = z.object({
  method: MergeMethod,
  destination: AdapterName.optional(),
  mode: z.enum(["sequence", "exact"]).optional(),
  adapters: z.array(LeasedAdapter.extend({ weight: z.number().min(-10).max(10).default(1) })).min(2).max(16),
}).strict();
export type MergeWork = z.infer<typeof MergeWork>;

export const Merge = z.object({
  ...JobFields,
  method: MergeMethod,
  base_model: z.string(),
  destination: z.string(),
  input: z.record(z.string(), z.unknown()),
  output: TrainingOutput.nullable(),
});
export type Merge = z.infer<typeof Merge>;
