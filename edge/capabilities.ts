/**
 * What the registered workers serve, checked before a job is accepted (so before its price is reserved): a
 * training method, a merge method, or the optional prediction features (`shared/methods.ts`) a request asks
 * for. The rule: among the workers registered for the job's base model and kind, at least one must serve the
 * method (trainings, merges) or every feature the prediction uses; else 501 `not-implemented`, naming what is
 * missing and what those workers serve, with no job and no ledger entry. With no worker registered for the
 * model and kind at all, the job is accepted and waits in the queue for one (a pool that is starting, the
 * embedded worker registering just after the edge listens, tests that enqueue first): there is then nobody to
 * ask, and refusing would make the order of start-up matter.
 *
 * @example
 * ```ts
 * await requireServed(edge, { kind: "training", baseModel: "tiny-shapes", method: "cidm" }); // or 501
 * ```
 */
import {
  type MergeMethod,
  PREDICTION_FEATURE_REGISTRY,
  type PredictionFeature,
  type TrainingMethod,
} from "../shared/methods.ts";
import type { Edge, WorkerRecord } from "./context.ts";
import { ApiProblem } from "./problem.ts";

/** What a job needs of a worker besides its base model and kind. */
export type ServingNeed =
  | { kind: "training"; baseModel: string; method: TrainingMethod }
  | { kind: "merge"; baseModel: string; method: MergeMethod }
  | { kind: "prediction"; baseModel: string; features: PredictionFeature[] };

/** The registered workers for a base model and job kind. */
export async function workersFor(edge: Edge, baseModel: string, kind: WorkerRecord["kinds"][number]) {
  const all = await edge.metadata.list<WorkerRecord>(["workers"], { limit: 1000 });
  return all.items.map((i) => i.value).filter((w) => w.models.includes(baseModel) && w.kinds.includes(kind));
}

const list = (xs: readonly string[]) => xs.length ? xs.join(", ") : "none";

/** Throws the 501 problem when workers for the job's model and kind are registered and none serves it. */
export async function requireServed(edge: Edge, need: ServingNeed): Promise<void> {
  const workers = await workersFor(edge, need.baseModel, need.kind);
  if (!workers.length) return;
  const where = `no worker registered for base model "${need.baseModel}"`;
  if (need.kind === "training" || need.kind === "merge") {
    const served = [
      ...new Set(workers.flatMap((w) => (need.kind === "training" ? w.methods : w.merges) ?? [])),
    ];
    if ((served as string[]).includes(need.method)) return;
    throw notImplemented(
      `${where} runs the ${need.kind} method "${need.method}" (they run: ${list(served)})`,
    );
  }
  if (!need.features.length) return;
  if (workers.some((w) => need.features.every((f) => w.features?.includes(f)))) return;
  const served = [...new Set(workers.flatMap((w) => w.features ?? []))];
  const missing = need.features.filter((f) => !served.includes(f));
  const named = (fs: PredictionFeature[]) =>
    fs.map((f) => `"${f}" (input.${PREDICTION_FEATURE_REGISTRY[f].field})`).join(", ");
  throw notImplemented(
    missing.length
      ? `${where} serves the prediction feature${missing.length > 1 ? "s" : ""} ${named(missing)} ` +
        `(they serve: ${list(served)})`
      : `${where} serves the prediction features ${named(need.features)} together ` +
        `(each is served by some worker, no worker serves them all)`,
  );
}

/** A 501 with `detail`: what this server does not serve. */
export const notImplemented = (detail: string) =>
  new ApiProblem(501, "not-implemented", "Not Implemented", detail);
