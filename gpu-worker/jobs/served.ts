/**
 * What this worker serves, in one place: the training and merge methods of its registry
 * (`methods/registry.ts`) and the prediction features its prediction job implements. It advertises them when
 * it registers (so the edge answers 501 for what no worker serves, before charging), and refuses a leased job
 * that asks for anything else before its input is parsed (an edge that routed it anyway, or an older one).
 *
 * @example
 * ```ts
 * const registration = { name, models, kinds, executionProvider: "cpu", ...servedCapabilities() };
 * refuseUnserved(envelope); // NotServedError: training method "cidm" is not served by this worker ...
 * ```
 */
import { PREDICTION_FEATURE_REGISTRY, unservedBy } from "../../shared/methods.ts";
import type { LeaseEnvelope, RegisterRequest } from "../../shared/worker_protocol.ts";
import { NotServedError } from "../input_error.ts";
import { servedMergeMethods, servedTrainingMethods } from "../methods/registry.ts";
import { SERVED_PREDICTION_FEATURES } from "./prediction.ts";
import { trainingNotServed } from "./training.ts";
import { mergeNotServed } from "./merge.ts";
import { hasSeeCoder } from "../seecoder/folder.ts";

/**
 * The `methods`, `merges` and `features` of this worker's registration. `reference_image` is served only
 * when `referenceImage` says so: every model the worker registers has a SeeCoder (`modelsServeReferenceImage`).
 */
export function servedCapabilities(
  opts: { referenceImage?: boolean } = {},
): Pick<RegisterRequest, "methods" | "merges" | "features"> {
  return {
    methods: servedTrainingMethods(),
    merges: servedMergeMethods(),
    features: [...SERVED_PREDICTION_FEATURES, ...(opts.referenceImage ? ["reference_image" as const] : [])],
  };
}

/**
 * Whether every one of `models` (folders under `modelsDir`) has a SeeCoder, so the worker may advertise
 * `reference_image`: the registration lists features per worker, not per model, so one model without a
 * SeeCoder keeps the feature off (the edge then answers 501 rather than lease a job that must fail).
 */
export async function modelsServeReferenceImage(modelsDir: string, models: string[]): Promise<boolean> {
  if (!models.length) return false;
  for (const m of models) if (!(await hasSeeCoder(`${modelsDir}/${m}`))) return false;
  return true;
}

/**
 * Throws NotServedError when the job's method, or a prediction feature it uses, is not served here (`served`:
 * what the worker registered; default the capabilities without a SeeCoder).
 */
export function refuseUnserved(
  job: LeaseEnvelope,
  served: Pick<RegisterRequest, "methods" | "merges" | "features"> = servedCapabilities(),
): void {
  const lacks = unservedBy(served, job);
  if (lacks.method !== null) {
    throw job.kind === "training" ? trainingNotServed(lacks.method) : mergeNotServed(lacks.method);
  }
  if (lacks.features.length) {
    const fields = lacks.features.map((f) => `input.${PREDICTION_FEATURE_REGISTRY[f].field}`);
    throw new NotServedError(
      `${fields.join(", ")} ${lacks.features.length > 1 ? "are" : "is"} not supported by this worker yet ` +
        `(it serves: ${served.features.join(", ") || "plain txt2img"})`,
    );
  }
}
