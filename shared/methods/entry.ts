/**
 * The shape of one training method's shared registry entry (`shared/methods.ts` lists them): everything the
 * edge, pricing, the docs and the worker protocol need to know about a method without its run, which lives
 * on the worker (`gpu-worker/methods/registry.ts`).
 *
 * @example
 * ```ts
 * export const myMethod = defineTrainingMethod({ name: "my_method", title: "...", input: MyInput,
 *   work: MyWork, defaultSteps: () => 100, prices: { per_step: 5 }, adapterKind: "concept" });
 * ```
 */
import type { z } from "zod";

/** What a method's adapters are to predictions (`AdapterKind` of `shared/adapters.ts`). */
export type AdapterKindName = "concept" | "slider" | "library";

export interface TrainingMethodEntry<
  N extends string = string,
  I extends z.ZodType = z.ZodType,
  W extends z.ZodType = z.ZodType,
  P extends { per_step: number } = { per_step: number },
> {
  /** `method` of `POST /v1/trainings`. */
  name: N;
  /** The paper and what it trains, for the docs. */
  title: string;
  /** `input` of `POST /v1/trainings`: API.md's names, METHODS.md's defaults, unknown fields refused. */
  input: I;
  /** The input as a worker leases it: the same fields with defaults filled, files as blob names. */
  work: W;
  /** Steps when the request leaves them out (may depend on the rest of the input). */
  defaultSteps(input: z.output<I>): number;
  /** Credits per step and image of the batch; `per_step` unless `priceOf` picks another. */
  prices: P;
  /** Which of `prices` a request pays (e.g. full fine-tuning costs more than LoRA); default `per_step`. */
  priceOf?(input: z.output<I>): keyof P & string;
  /** What the adapter a run makes is to predictions. */
  adapterKind: AdapterKindName;
}

/** Types a registry entry (an identity: the inference keeps each method's own schema types). */
export function defineTrainingMethod<
  N extends string,
  I extends z.ZodType,
  W extends z.ZodType,
  P extends { per_step: number },
>(entry: TrainingMethodEntry<N, I, W, P>): TrainingMethodEntry<N, I, W, P> {
  return entry;
}
