/**
 * The method registry, shared part: one entry per training method (`shared/methods/<method>.ts`: input
 * schema, leased input, defaults, price, adapter kind), per merge method, and per optional prediction
 * feature. The edge (routes, pricing, `/openapi.json`, the 501 for what no worker serves), the worker
 * protocol (typed leases) and the docs read it; the runs are the worker's part
 * (`gpu-worker/methods/registry.ts`), so the edge never imports worker code. Adding a method: one file in
 * `shared/methods/`, one entry here, one run in the worker's registry.
 *
 * @example
 * ```ts
 * const m = TRAINING_METHOD_REGISTRY.custom_diffusion;
 * const input = withDefaultSteps("custom_diffusion", m.input.parse({ images: ["file_1"] }));
 * input.steps; // 250
 * predictionFeatures({ prompt: "x", sliders: [{ id: "s", scale: 1 }] }); // ["sliders"]
 * ```
 */
import { z } from "zod";
import { dreambooth } from "./methods/dreambooth.ts";
import { customDiffusion } from "./methods/custom_diffusion.ts";
import { conceptSlider } from "./methods/concept_slider.ts";
import { cidm } from "./methods/cidm.ts";
import type { AdapterKindName } from "./methods/entry.ts";

export type { AdapterKindName, TrainingMethodEntry } from "./methods/entry.ts";

/** Training methods by name (`method` of `POST /v1/trainings`). */
export const TRAINING_METHOD_REGISTRY = {
  dreambooth,
  custom_diffusion: customDiffusion,
  concept_slider: conceptSlider,
  cidm,
} as const;
type TrainingRegistry = typeof TRAINING_METHOD_REGISTRY;

export type TrainingMethod = keyof TrainingRegistry;
export const TRAINING_METHODS = Object.keys(TRAINING_METHOD_REGISTRY) as [
  TrainingMethod,
  ...TrainingMethod[],
];
export const TrainingMethod = z.enum(TRAINING_METHODS);

/** The public input of a method, parsed (defaults filled). */
export type TrainingInputOf<M extends TrainingMethod> = z.output<TrainingRegistry[M]["input"]>;
/** The input a worker leases for a method. */
export type TrainingWorkOf<M extends TrainingMethod> = z.output<TrainingRegistry[M]["work"]>;

/** The method's input with `steps` resolved (a method's default may depend on the rest of the input). */
export function withDefaultSteps<M extends TrainingMethod>(
  method: M,
  input: TrainingInputOf<M>,
): TrainingInputOf<M> & { steps: number } {
  const entry = TRAINING_METHOD_REGISTRY[method] as unknown as {
    defaultSteps(input: TrainingInputOf<M>): number;
  };
  const given = (input as { steps?: number }).steps;
  return { ...input, steps: given ?? entry.defaultSteps(input) };
}

/** Credits one step of one batch item of this input costs (the method's `prices`, chosen by `priceOf`). */
export function perStepPrice<M extends TrainingMethod>(method: M, input: TrainingInputOf<M>): number {
  const entry = TRAINING_METHOD_REGISTRY[method] as unknown as {
    prices: Record<string, number>;
    priceOf?(input: TrainingInputOf<M>): string;
  };
  return entry.prices[entry.priceOf?.(input) ?? "per_step"];
}

/** One merge method (`method` of `POST /v1/merges`). */
export interface MergeMethodEntry {
  title: string;
  /** Credits per merge. */
  price: number;
  /** What the merged adapter is to predictions. */
  adapterKind: AdapterKindName;
}

export const MERGE_METHOD_REGISTRY = {
  custom_diffusion: {
    title: "Custom Diffusion's closed-form merge: constrained least squares per attn2 K/V (Kumari et al.)",
    price: 50,
    adapterKind: "concept",
  },
  linear: { title: "A weighted sum of the adapters' LoRA deltas", price: 50, adapterKind: "concept" },
  cidm: {
    title: "CIDM's elastic weight aggregation of a concept library (Dong et al.)",
    price: 50,
    adapterKind: "library",
  },
} as const satisfies Record<string, MergeMethodEntry>;

export type MergeMethod = keyof typeof MERGE_METHOD_REGISTRY;
export const MERGE_METHODS = Object.keys(MERGE_METHOD_REGISTRY) as [MergeMethod, ...MergeMethod[]];
export const MergeMethod = z.enum(MERGE_METHODS);

/** A prediction feature a worker may or may not serve, and the input field whose presence asks for it. */
export interface PredictionFeatureEntry {
  title: string;
  /** The `input` field of `POST /v1/predictions` (the same in a leased prediction). */
  field: string;
}

/** Optional prediction features; plain txt2img with LoRA and Custom Diffusion adapters is not one. */
export const PREDICTION_FEATURE_REGISTRY = {
  img2img: { title: "image + strength: start from an image (SDEdit)", field: "image" },
  inpainting: { title: "image + mask: repaint the masked part, keep the rest", field: "mask" },
  sliders: { title: "Concept Sliders, each with a scale and a start step", field: "sliders" },
  regions: { title: "boxes, each with its own prompt and adapters", field: "regions" },
  reference_image: {
    title: "Prompt-Free: SeeCoder embeddings of a reference image in place of text",
    field: "reference_image",
  },
} as const satisfies Record<string, PredictionFeatureEntry>;

export type PredictionFeature = keyof typeof PREDICTION_FEATURE_REGISTRY;
export const PREDICTION_FEATURES = Object.keys(PREDICTION_FEATURE_REGISTRY) as [
  PredictionFeature,
  ...PredictionFeature[],
];
export const PredictionFeature = z.enum(PREDICTION_FEATURES);

const given = (v: unknown) => v !== undefined && v !== null && !(Array.isArray(v) && v.length === 0);

/** The optional features a prediction's input (public or leased) uses, in registry order. */
export function predictionFeatures(input: Record<string, unknown>): PredictionFeature[] {
  return PREDICTION_FEATURES.filter((f) => given(input[PREDICTION_FEATURE_REGISTRY[f].field]));
}

/** What a worker registered as serving; a list it did not give (an older worker) means every one. */
export interface ServedCapabilities {
  methods?: readonly string[];
  merges?: readonly string[];
  features?: readonly PredictionFeature[];
}

/**
 * What a worker lacks to run a job: its training or merge method (`method`), or the prediction features its
 * input uses that the worker does not serve (`features`); both empty when it serves the job. The one rule the
 * edge's lease filter and the worker's own refusal share.
 *
 * @example
 * ```ts
 * unservedBy({ methods: ["dreambooth"] }, { kind: "training", method: "cidm", input: {} }); // { method: "cidm", features: [] }
 * ```
 */
export function unservedBy(
  caps: ServedCapabilities,
  job: { kind: string; method?: string | null; input: Record<string, unknown> },
): { method: string | null; features: PredictionFeature[] } {
  const list = job.kind === "training" ? caps.methods : job.kind === "merge" ? caps.merges : undefined;
  if (job.kind === "training" || job.kind === "merge") {
    const m = job.method ?? "";
    return { method: list && !list.includes(m) ? m : null, features: [] };
  }
  const features = caps.features;
  return {
    method: null,
    features: features ? predictionFeatures(job.input).filter((f) => !features.includes(f)) : [],
  };
}
