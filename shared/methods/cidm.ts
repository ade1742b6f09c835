/**
 * CIDM, concept-incremental customization (Dong et al., NeurIPS 2024), the shared part of its registry entry:
 * the `cidm` input (new concepts added to a tenant's concept library), what a worker leases (the library's
 * current weights as `library_adapter`, null on first use), the price and the adapter it makes (the library).
 * No worker runs it yet: the edge refuses it with 501 once a worker serving the base model is registered.
 *
 * @example
 * ```ts
 * CidmInput.parse({ images: ["file_1"], library: "pets" }).tokens; // ["<c1>"]
 * ```
 */
import { z } from "zod";
import {
  AdapterName,
  BlobName,
  ClassWord,
  COMMON_TRAINING_FIELDS,
  Images,
  Token,
  TRAINING_WORK_FIELDS,
} from "./common.ts";
import { defineTrainingMethod } from "./entry.ts";

export const CIDM_STEPS = 500;

export const CidmInput = z.object({
  images: Images,
  ...COMMON_TRAINING_FIELDS,
  steps: COMMON_TRAINING_FIELDS.steps.default(CIDM_STEPS),
  library: AdapterName,
  tokens: z.array(Token).min(1).max(8).default(["<c1>"]),
  class_word: ClassWord.optional(),
  orthogonal_weight: z.number().min(0).max(100).default(0.1),
  shared_weight: z.number().min(0).max(100).default(0.1),
}).strict();

/** The leased input: images as blob names, and the library's current weights (an adapter id in `blobs`). */
export const CidmWork = CidmInput.extend({
  ...TRAINING_WORK_FIELDS,
  library_adapter: BlobName.nullable(),
});

export const cidm = defineTrainingMethod({
  name: "cidm",
  title: "CIDM (Dong et al., NeurIPS 2024): a concept library that keeps old concepts as new ones join",
  input: CidmInput,
  work: CidmWork,
  defaultSteps: () => CIDM_STEPS,
  prices: { per_step: 10 },
  adapterKind: "library",
});
