/**
 * Concept Sliders (Gandikota et al., ECCV 2024), the shared part of its registry entry: the `concept_slider`
 * input (a text slider from prompt pairs, or a visual one from image pairs), what a worker leases, the price
 * and the adapter it makes (a slider: used with a scale per step in predictions' `sliders`). The worker's run
 * is `gpu-worker/methods/concept_slider.ts`. A prompt may mark with `{}` where each preservation attribute goes
 * ("a {}, white background" with attributes "red circle", "blue square"); without it attributes are prefixed.
 *
 * @example
 * ```ts
 * ConceptSliderInput.parse({ positive: "very old", negative: "very young" }).steps; // 1000
 * ```
 */
import { z } from "zod";
import {
  BlobName,
  COMMON_TRAINING_FIELDS,
  FileId,
  ImageNames,
  Images,
  TRAINING_WORK_FIELDS,
} from "./common.ts";
import { defineTrainingMethod } from "./entry.ts";

export const CONCEPT_SLIDER_STEPS = 1000;

const FilePair = z.object({ low: FileId, high: FileId, scale: z.number().min(-10).max(10).default(1) })
  .strict();
const needsPromptsOrPairs = (v: { kind: string; pairs?: unknown[]; images?: unknown; positive?: string }) =>
  v.kind === "visual" ? (v.pairs?.length ?? 0) > 0 || v.images !== undefined : v.positive !== undefined;
const promptsOrPairs = {
  message:
    "a text slider needs positive (and negative); a visual slider needs pairs, or images: one zip with folders verylow/low/high/veryhigh",
  path: ["kind"],
};

/**
 * The sliders repository's visual-slider folders and the scale of each: an image `low/x.png` pairs with
 * `high/x.png` (scale 1), `verylow/x.png` with `veryhigh/x.png` (scale 2).
 */
export const SLIDER_FOLDERS: Readonly<Record<string, number>> = {
  verylow: -2,
  low: -1,
  high: 1,
  veryhigh: 2,
};

/** A pair of a visual slider taken from folders: entry names as given. */
export interface FolderPair {
  low: string;
  high: string;
  scale: number;
}

/**
 * Pairs a visual slider's images by folder and file name (`[prefix/]low/x.png` with `[prefix/]high/x.png`).
 * Returns the pairs, or the reasons they cannot be made: an image outside the four folders, or one whose
 * counterpart is missing (each named).
 */
export function pairsFromFolders(names: readonly string[]): { pairs: FolderPair[]; problems: string[] } {
  const byFolder = new Map<number, Map<string, string>>();
  const problems: string[] = [];
  for (const name of names) {
    const parts = name.split("/");
    const folder = parts.length >= 2 ? parts[parts.length - 2] : "";
    const scale = SLIDER_FOLDERS[folder];
    if (scale === undefined) {
      problems.push(`${name} is not in a folder verylow/, low/, high/ or veryhigh/`);
      continue;
    }
    // Paired within the same parent folder: `a/low/x.png` with `a/high/x.png`.
    const key = [...parts.slice(0, -2), parts[parts.length - 1].replace(/\.[^.]*$/, "")].join("/");
    if (!byFolder.has(scale)) byFolder.set(scale, new Map());
    byFolder.get(scale)!.set(key, name);
  }
  const pairs: FolderPair[] = [];
  for (const scale of [1, 2]) {
    const lows = byFolder.get(-scale) ?? new Map<string, string>(),
      highs = byFolder.get(scale) ?? new Map<string, string>();
    const [lo, hi] = scale === 1 ? ["low", "high"] : ["verylow", "veryhigh"];
    const base = (key: string) => key.slice(key.lastIndexOf("/") + 1);
    for (const [key, low] of lows) {
      const high = highs.get(key);
      if (high) pairs.push({ low, high, scale });
      else problems.push(`${low} has no ${hi}/${base(key)}.* beside it to pair with`);
    }
    for (const [key, high] of highs) {
      if (!lows.has(key)) problems.push(`${high} has no ${lo}/${base(key)}.* beside it to pair with`);
    }
  }
  if (!pairs.length && !problems.length) {
    problems.push("no images in folders verylow/, low/, high/, veryhigh/");
  }
  return { pairs, problems };
}

export const ConceptSliderInput = z.object({
  images: Images.optional(),
  ...COMMON_TRAINING_FIELDS,
  steps: COMMON_TRAINING_FIELDS.steps.default(CONCEPT_SLIDER_STEPS),
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
  train_method: z.enum(["noxattn", "innoxattn", "selfattn", "c3lier", "xattn", "full"]).default("noxattn"),
  /**
   * Text sliders: the partial denoising runs k ~ U[1, max_denoising_steps - 1] DDIM steps of this many (the
   * sliders repo: 50; a small model such as tiny-shapes trains as well with 20, at less than half the cost).
   */
  max_denoising_steps: z.number().int().min(2).max(1000).default(50),
  /** Classifier-free guidance of that partial denoising (the sliders repo: 3). */
  denoise_guidance: z.number().min(0).max(50).default(3),
}).strict().refine(needsPromptsOrPairs, promptsOrPairs);

/** The leased input: image pairs and images as blob names. */
export const ConceptSliderWork = z.object({
  ...ConceptSliderInput.shape,
  ...TRAINING_WORK_FIELDS,
  images: ImageNames.optional(),
  pairs: z.array(FilePair.extend({ low: BlobName, high: BlobName })).max(64).optional(),
}).strict().refine(needsPromptsOrPairs, promptsOrPairs);

export const conceptSlider = defineTrainingMethod({
  name: "concept_slider",
  title: "Concept Sliders (Gandikota et al., ECCV 2024): a LoRA whose scale moves one attribute",
  input: ConceptSliderInput,
  work: ConceptSliderWork,
  defaultSteps: () => CONCEPT_SLIDER_STEPS,
  prices: { per_step: 6 },
  adapterKind: "slider",
});
