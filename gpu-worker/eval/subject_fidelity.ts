/**
 * DreamBooth's evaluation (Ruiz et al., 2023, Sec. 4.1): subject fidelity as DINO and CLIP-I, the mean pairwise
 * cosine similarity between embeddings of generated and real images of the subject, and prompt fidelity as
 * CLIP-T, the mean cosine similarity between each prompt's and its generated images' CLIP embeddings; the
 * paper's protocol is 25 prompts x 4 images per subject. The encoders come from `image_text_encoders.ts`;
 * the paper's Table 1 numbers are here to be shown beside ours.
 *
 * @example
 * ```ts
 * const enc = await EvalEncoders.load("models/sd15", runner);
 * const s = await subjectFidelity(enc, { generated, real, prompts });
 * console.log(paperComparisonTable({ "ours (SD, LoRA)": s }));
 * ```
 */
import type { RgbImage } from "../image/png.ts";
import type { EvalEncoders } from "./image_text_encoders.ts";

/** One row of the paper's Table 1 (null where the paper has no number). */
export interface FidelityRow {
  dino: number | null;
  clip_i: number | null;
  clip_t: number | null;
}

/** DreamBooth paper, Table 1 (as METHODS.md quotes it). */
export const DREAMBOOTH_PAPER_TABLE: Readonly<Record<string, FidelityRow>> = {
  "Real images": { dino: 0.774, clip_i: 0.885, clip_t: null },
  "DreamBooth (Stable Diffusion)": { dino: 0.668, clip_i: 0.803, clip_t: 0.305 },
  "Textual Inversion (Stable Diffusion)": { dino: 0.569, clip_i: 0.780, clip_t: 0.255 },
};

/**
 * The paper's 25 evaluation prompts for objects (`{0}` is "<token> <class>", e.g. "sks backpack"); live
 * subjects use a similar list with accessories and outfits.
 */
export const DREAMBOOTH_OBJECT_PROMPTS = [
  "a {0} in the jungle",
  "a {0} in the snow",
  "a {0} on the beach",
  "a {0} on a cobblestone street",
  "a {0} on top of pink fabric",
  "a {0} on top of a wooden floor",
  "a {0} with a city in the background",
  "a {0} with a mountain in the background",
  "a {0} with a blue house in the background",
  "a {0} on top of a purple rug in a forest",
  "a {0} with a wheat field in the background",
  "a {0} with a tree and autumn leaves in the background",
  "a {0} with the Eiffel Tower in the background",
  "a {0} floating on top of water",
  "a {0} floating in an ocean of milk",
  "a {0} on top of green grass with sunflowers around it",
  "a {0} on top of a mirror",
  "a {0} on top of the sidewalk in a crowded street",
  "a {0} on top of a dirt road",
  "a {0} on top of a white rug",
  "a red {0}",
  "a purple {0}",
  "a shiny {0}",
  "a wet {0}",
  "a cube shaped {0}",
] as const;

/** Cosine similarity of two vectors (0 when either is zero). */
export function cosineSimilarity(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new RangeError(`vectors of ${a.length} and ${b.length} values`);
  let ab = 0, aa = 0, bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i] * b[i];
    aa += a[i] * a[i];
    bb += b[i] * b[i];
  }
  return aa > 0 && bb > 0 ? ab / Math.sqrt(aa * bb) : 0;
}

/**
 * Mean cosine similarity over every (a, b) pair: the paper's DINO and CLIP-I when `a` are generated images'
 * embeddings and `b` the real images'.
 *
 * @example
 * ```ts
 * meanPairwiseCosine([[1, 0]], [[1, 0], [0, 1]]); // 0.5
 * ```
 */
export function meanPairwiseCosine(a: ArrayLike<number>[], b: ArrayLike<number>[]): number {
  if (!a.length || !b.length) {
    throw new RangeError(`need embeddings on both sides, got ${a.length} and ${b.length}`);
  }
  let s = 0;
  for (const x of a) for (const y of b) s += cosineSimilarity(x, y);
  return s / (a.length * b.length);
}

/**
 * Mean cosine similarity of matched pairs: CLIP-T when `a[i]` is generated image i's embedding and `b[i]` its
 * prompt's.
 */
export function meanMatchedCosine(a: ArrayLike<number>[], b: ArrayLike<number>[]): number {
  if (a.length !== b.length || !a.length) {
    throw new RangeError(
      `need as many embeddings on both sides (at least one), got ${a.length} and ${b.length}`,
    );
  }
  return a.reduce((s, x, i) => s + cosineSimilarity(x, b[i]), 0) / a.length;
}

export interface SubjectFidelityInput {
  generated: RgbImage[];
  /** The subject's real (training) images. */
  real: RgbImage[];
  /** The prompt of each generated image (for CLIP-T); omit to skip CLIP-T. */
  prompts?: string[];
}

/**
 * DINO, CLIP-I and CLIP-T of generated images, each null when the model folder has no such encoder.
 * Prompts are embedded as given; the paper embeds them with the identifier in place.
 */
export async function subjectFidelity(enc: EvalEncoders, x: SubjectFidelityInput): Promise<FidelityRow> {
  if (x.prompts && x.prompts.length !== x.generated.length) {
    throw new RangeError(`${x.prompts.length} prompts for ${x.generated.length} generated images`);
  }
  const image = async (e: EvalEncoders["dino"]) =>
    e ? meanPairwiseCosine(await e.embedImages(x.generated), await e.embedImages(x.real)) : null;
  const dino = await image(enc.dino);
  const clip_i = await image(enc.clipImage);
  let clip_t: number | null = null;
  if (x.prompts && enc.clipImage && enc.clipText) {
    clip_t = meanMatchedCosine(
      await enc.clipImage.embedImages(x.generated),
      await enc.clipText.embedTexts(x.prompts),
    );
  }
  return { dino, clip_i, clip_t };
}

/**
 * A markdown table of our rows beside the paper's Table 1, for docs.
 *
 * @example
 * ```ts
 * paperComparisonTable({ "ours": { dino: 0.61, clip_i: 0.79, clip_t: 0.29 } });
 * ```
 */
export function paperComparisonTable(ours: Record<string, FidelityRow>): string {
  const f = (v: number | null) => (v === null ? "-" : v.toFixed(3));
  const lines = ["| | DINO | CLIP-I | CLIP-T |", "|---|---|---|---|"];
  for (const [name, r] of Object.entries(DREAMBOOTH_PAPER_TABLE)) {
    lines.push(`| ${name} (paper) | ${f(r.dino)} | ${f(r.clip_i)} | ${f(r.clip_t)} |`);
  }
  for (const [name, r] of Object.entries(ours)) {
    lines.push(`| ${name} | ${f(r.dino)} | ${f(r.clip_i)} | ${f(r.clip_t)} |`);
  }
  return lines.join("\n");
}
