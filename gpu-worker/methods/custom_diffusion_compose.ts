/**
 * Several separately trained Custom Diffusion concepts in one model: the closed-form merge of their K/V
 * weights (`custom_diffusion_merge.ts`) fed with text features from the base model's text encoder:
 *   - regularization features K: every token position of 200 captions (a model folder may give its own list in
 *     `custom_diffusion/regularization_captions.txt`, one caption per line, as the paper's LAION captions; else
 *     seeded ShapesWorld captions, the tiny model's world);
 *   - target features of concept n: "<newN> {class}" and "photo of a <newN> {class}" (METHODS.md), encoded
 *     with the concept's own token embedding (the exact merge takes the words from the modifier token on: those
 *     before it do not depend on the concept under CLIP's causal attention, so they would repeat across
 *     concepts and make the constraints contradictory).
 * Two modes. `exact` is the paper's: hard constraints on the target words and the end-of-text token
 * (`closedFormMerge`). `sequence` (the default) constrains every position of the target prompts (BOS,
 * words, EOS and padding) as a strong penalty (`softConstrainedMerge`), since those rows outnumber the feature
 * dimensions. Measured on the tiny model (BENCHMARKS.md): the exact merge on the words alone turned one
 * concept's white background purple, and with EOS was about as faithful as the naive average; the sequence
 * merge keeps every concept-dependent position about 2x closer than the average (features; 1.85x-2.1x) and showed both
 * concepts in one prompt a little more often than the average (images).
 * Used by `POST /v1/merges` and by predictions that name several Custom Diffusion adapters.
 *
 * @example
 * ```ts
 * const { adapter, stats } = await mergeCustomDiffusion(pipe, [dogAdapter, catAdapter]);
 * await pipe.generate({ prompt: "a <new1> dog and a <new2> cat", tokens: adapter.tokens,
 *   adapters: [{ lora: weightsAsLora("merged", adapter.layers, pipe.folder.weights.unet), scale: 1 }] });
 * ```
 */
import { JobInputError } from "../input_error.ts";
import type { StableDiffusionPipeline } from "../pipelines/stable_diffusion.ts";
import {
  baseLinearWeight,
  type CustomDiffusionAdapter,
  type CustomDiffusionLayer,
  layerWeight,
} from "../adapters/custom_diffusion.ts";
import {
  type BaseLayer,
  closedFormMerge,
  factorRegularization,
  type MergeConcept,
  naiveAverage,
  type RegularizationFactor,
  softConstrainedMerge,
} from "./custom_diffusion_merge.ts";
import { captionOf, sampleTrainScene } from "../shapesworld/world.ts";
import { Rng } from "../random.ts";
import { pathExists } from "../fs.ts";

/** Captions for the regularization features (the paper uses the first 200 of its list). */
export const MERGE_CAPTION_COUNT = 200;

/** The target prompts of a concept (METHODS.md). */
export function targetPrompts(token: string, classWord: string): string[] {
  return [`${token} ${classWord}`.trim(), `photo of a ${token} ${classWord}`.trim()];
}

/** The regularization captions of a base model: its own list when it has one, else seeded ShapesWorld captions. */
export async function mergeCaptions(modelDir: string, count = MERGE_CAPTION_COUNT): Promise<string[]> {
  const file = `${modelDir}/custom_diffusion/regularization_captions.txt`;
  if (await pathExists(file)) {
    const lines = (await Deno.readTextFile(file)).split("\n").map((l) => l.trim()).filter(Boolean);
    if (lines.length) return lines.slice(0, count);
  }
  return Array.from({ length: count }, (_, i) => {
    const rng = Rng.derive(0, 0xc0de, i);
    return captionOf(sampleTrainScene(rng), rng);
  });
}

/** Text-encoder output rows for every position of each caption: [captions x L, D]. */
export async function regularizationFeatures(
  pipe: StableDiffusionPipeline,
  captions: string[],
): Promise<{ data: Float32Array; rows: number; dim: number }> {
  const parts: Float32Array[] = [];
  let rows = 0, dim = 0;
  for (let i = 0; i < captions.length; i += 32) {
    const t = await pipe.encodePrompt(captions.slice(i, i + 32));
    parts.push(t.f);
    rows += t.dims[0] * t.dims[1];
    dim = t.dims[2];
  }
  const data = new Float32Array(rows * dim);
  let off = 0;
  for (const p of parts) {
    data.set(p, off);
    off += p.length;
  }
  return { data, rows, dim };
}

/**
 * Which positions of a target prompt are taken: its words from the modifier on (`words`), those and the
 * end-of-text token (`eos`, the exact merge's), or every position, BOS and padding included (`sequence`; the
 * UNet's cross-attention reads all of them; the positions before the modifier are shared by every concept and
 * get a least-squares compromise).
 */
export type TargetSpan = "words" | "eos" | "sequence";

/** How concepts are merged: `exact` (the paper: hard constraints on the words and EOS), `sequence` (default). */
export type MergeMode = "exact" | "sequence";

/**
 * Text-encoder output rows of the target words of each prompt: from the first modifier token to the last word
 * (no BOS, EOS or padding). Words before the modifier ("photo of a") are left out: with CLIP's causal
 * attention their features do not depend on the concept, so they would be the same rows for every concept
 * (and make the merge's constraints contradictory).
 */
export async function targetFeatures(
  pipe: StableDiffusionPipeline,
  prompts: string[],
  tokens: CustomDiffusionAdapter["tokens"],
  o: { span?: TargetSpan } = {},
): Promise<{ data: Float32Array; rows: number; dim: number }> {
  const t = await pipe.encodePrompt(prompts, tokens);
  const [, L, D] = t.dims;
  const tok = pipe.tokenizerWith(tokens);
  const modifierIds = new Set(
    tokens.map((x) => tok.encode(x.token)).filter((ids) => ids.length === 1).map((ids) => ids[0]),
  );
  const out: number[] = [];
  prompts.forEach((p, i) => {
    const ids = tok.encode(p).slice(0, L - 2);
    const first = ids.findIndex((id) => modifierIds.has(id));
    if (first < 0) throw new JobInputError(`target prompt "${p}" has none of the modifier tokens`);
    const span = o.span ?? "words";
    // Positions: BOS is 0, word k is k + 1.
    const from = span === "sequence" ? 0 : first + 1;
    const to = span === "sequence" ? L : ids.length + 1 + (span === "eos" ? 1 : 0);
    for (let pos = from; pos < to; pos++) {
      for (let d = 0; d < D; d++) out.push(t.f[(i * L + pos) * D + d]);
    }
  });
  return { data: Float32Array.from(out), rows: out.length / D, dim: D };
}

export interface ComposeStats {
  concepts: number;
  layers: number;
  targetRows: number;
  regularizationRows: number;
  ms: number;
}

/** Regularization factors (C = KᵀK's Cholesky) per pipeline and caption list: computed once. */
const factors = new WeakMap<StableDiffusionPipeline, Map<string, Promise<RegularizationFactor>>>();

function regularizationFactor(
  pipe: StableDiffusionPipeline,
  captions: string[],
): Promise<RegularizationFactor> {
  let byCaptions = factors.get(pipe);
  if (!byCaptions) factors.set(pipe, byCaptions = new Map());
  const key = captions.join("\n");
  let f = byCaptions.get(key);
  if (!f) {
    f = regularizationFeatures(pipe, captions).then((r) => factorRegularization(r.data, r.rows, r.dim));
    f.catch(() => byCaptions!.delete(key));
    byCaptions.set(key, f);
  }
  return f;
}

/** Modifier tokens must be distinct across the adapters (one embedding each). */
function checkDistinctTokens(adapters: CustomDiffusionAdapter[]) {
  const seen = new Map<string, string>();
  for (const a of adapters) {
    if (!a.tokens.length) throw new JobInputError(`adapter "${a.name}" has no modifier token to merge by`);
    for (const t of a.tokens) {
      const other = seen.get(t.token);
      if (other !== undefined) {
        throw new JobInputError(
          `adapters "${other}" and "${a.name}" both use the token ${t.token}; retrain one with another modifier_token`,
        );
      }
      seen.set(t.token, a.name);
    }
  }
}

function classWordsOf(a: CustomDiffusionAdapter): string[] {
  const words = Array.isArray(a.info.class_words) ? a.info.class_words as unknown[] : [];
  return a.tokens.map((_, i) => typeof words[i] === "string" ? words[i] as string : "");
}

/** The base layers the adapters touch and each adapter as a merge concept (weights + target features). */
async function mergeInputs(
  pipe: StableDiffusionPipeline,
  adapters: CustomDiffusionAdapter[],
  o: { span?: TargetSpan } = {},
) {
  const unet = pipe.folder.weights.unet;
  const paths = [...new Set(adapters.flatMap((a) => [...a.layers.keys()]))].sort();
  const base = new Map<string, BaseLayer>();
  for (const p of paths) {
    const l = adapters.map((a) => a.layers.get(p)).find((x) => x)!;
    base.set(p, { data: baseLinearWeight(unet, p), out: l.out, inFeatures: l.in });
  }
  const concepts: MergeConcept[] = [];
  for (const a of adapters) {
    const words = classWordsOf(a);
    const prompts = a.tokens.flatMap((t, i) => targetPrompts(t.token, words[i]));
    const feats = await targetFeatures(pipe, prompts, a.tokens, o);
    const weights = new Map<string, Float32Array>();
    for (const [p, l] of a.layers) weights.set(p, layerWeight(l, base.get(p)!.data));
    concepts.push({ name: a.name, weights, targetFeatures: feats.data, targetRows: feats.rows });
  }
  return { base, concepts };
}

function combined(
  adapters: CustomDiffusionAdapter[],
  base: Map<string, BaseLayer>,
  weights: Map<string, Float32Array>,
  name: string,
  info: Record<string, unknown>,
): CustomDiffusionAdapter {
  const layers = new Map<string, CustomDiffusionLayer>();
  for (const [p, w] of weights) {
    const b = base.get(p)!;
    layers.set(p, { kind: "weight", out: b.out, in: b.inFeatures, weight: w });
  }
  return {
    name,
    layers,
    tokens: adapters.flatMap((a) => a.tokens),
    info: {
      tokens: adapters.flatMap((a) => a.tokens.map((t) => t.token)),
      class_words: adapters.flatMap(classWordsOf),
      merged_from: adapters.map((a) => a.name),
      ...info,
    },
  };
}

/**
 * Merges Custom Diffusion adapters (each one concept or a jointly trained few) into one adapter: K/V weights in
 * closed form, all modifier tokens kept. Tokens must be distinct across the adapters.
 */
export async function mergeCustomDiffusion(
  pipe: StableDiffusionPipeline,
  adapters: CustomDiffusionAdapter[],
  o: { captions?: string[]; name?: string; mode?: MergeMode; lambda?: number } = {},
): Promise<{ adapter: CustomDiffusionAdapter; stats: ComposeStats }> {
  const t0 = performance.now();
  if (adapters.length < 2) {
    throw new JobInputError(`a merge needs at least 2 adapters, got ${adapters.length}`);
  }
  checkDistinctTokens(adapters);
  const captions = o.captions ?? await mergeCaptions(pipe.folder.dir);
  const regularization = await regularizationFactor(pipe, captions);
  const mode = o.mode ?? "sequence";
  const { base, concepts } = await mergeInputs(pipe, adapters, {
    span: mode === "exact" ? "eos" : "sequence",
  });
  const merged = mode === "exact"
    ? closedFormMerge({ base, concepts, regularization, featureDim: regularization.featureDim })
    : softConstrainedMerge({
      base,
      concepts,
      regularization,
      featureDim: regularization.featureDim,
      lambda: o.lambda,
    });
  const adapter = combined(adapters, base, merged.weights, o.name ?? adapters.map((a) => a.name).join("+"), {
    merge: mode === "exact" ? "closed_form" : "closed_form_sequence",
    regularization_captions: captions.length,
  });
  return {
    adapter,
    stats: {
      concepts: adapters.length,
      layers: merged.weights.size,
      targetRows: merged.stats.targetRows,
      regularizationRows: regularization.rows,
      ms: performance.now() - t0,
    },
  };
}

/** The paper's baseline: the element-wise mean of the adapters' fine-tuned weights, all tokens kept. */
export async function averageCustomDiffusion(
  pipe: StableDiffusionPipeline,
  adapters: CustomDiffusionAdapter[],
): Promise<CustomDiffusionAdapter> {
  checkDistinctTokens(adapters);
  const { base, concepts } = await mergeInputs(pipe, adapters);
  return combined(adapters, base, naiveAverage(concepts, base), adapters.map((a) => a.name).join("+"), {
    merge: "average",
  });
}
