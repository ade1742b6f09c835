/**
 * Subject fidelity and prior drift for ShapesWorld, where no DINO or CLIP exists: the analytic analyzer
 * (`shapesworld/analysis.ts`) stands in for the embeddings.
 *
 * - Fidelity of generated images to a subject's training images: does the generated object have the subject's
 *   shape, colour and texture (majority over the training images), and how close is its colour histogram to
 *   the training objects' (histogram intersection over object pixels, so a new background does not count
 *   against it)? The score is the mean of the four, 1 for an image of the subject itself.
 * - Prior drift of a fine-tuned model: images of the class prompt from the base and the trained model with the
 *   same seeds, compared by mean per-pixel difference and by how many analyzed attributes (background, and the
 *   main object's shape, colour, texture) disagree. 0 for unchanged images.
 *
 * @example
 * ```ts
 * const f = shapesWorldFidelity(generated, trainingImages); // f.score in [0, 1]
 * const d = priorDrift(baseImages, trainedImages); // d.pixel, d.attributes in [0, 1]
 * ```
 */
import type { RgbImage } from "../image/png.ts";
import { type AnalyzedObject, analyzeImage, type ImageAnalysis } from "../shapesworld/analysis.ts";
import type { ColourName, ShapeName, TextureName } from "../shapesworld/world.ts";

/** Colour histogram bins per channel (4 -> 64 bins). */
const LEVELS = 4;
/** A pixel farther than this from the background's colour belongs to the object (as the analyzer's default). */
const OBJECT_THRESHOLD = 48;

/** What the training images say the subject is. */
export interface SubjectProfile {
  shape: ShapeName | null;
  colour: ColourName | null;
  texture: TextureName | null;
  /** Object-pixel colour histogram of each training image (empty where no object was found). */
  histograms: Float64Array[];
}

/** Per generated image: which attributes match (false when no object was found) and the histogram similarity. */
export interface ImageFidelity {
  found: boolean;
  shape: boolean;
  colour: boolean;
  texture: boolean;
  histogram: number;
}

export interface FidelityScores {
  /** Share of images whose object has the subject's shape / colour / texture. */
  shape: number;
  colour: number;
  texture: number;
  /** Mean histogram intersection with the training objects, in [0, 1]. */
  histogram: number;
  /** Mean of the four: 1 for images of the subject itself. */
  score: number;
  images: ImageFidelity[];
}

function majority<T>(xs: T[]): T | null {
  const counts = new Map<T, number>();
  for (const x of xs) counts.set(x, (counts.get(x) ?? 0) + 1);
  let best: T | null = null, n = 0;
  for (const [x, c] of counts) if (c > n) [best, n] = [x, c];
  return best;
}

/**
 * Normalized colour histogram (LEVELS^3 bins) of an object's pixels: those inside its bounding box farther
 * than the threshold from the background's colour.
 */
export function objectHistogram(img: RgbImage, analysis: ImageAnalysis, obj: AnalyzedObject): Float64Array {
  return histogramIn(img, analysis, obj.bbox);
}

function histogramIn(img: RgbImage, analysis: ImageAnalysis, box: AnalyzedObject["bbox"]): Float64Array {
  const h = new Float64Array(LEVELS ** 3);
  const [br, bg, bb] = analysis.backgroundRgb;
  const t2 = OBJECT_THRESHOLD ** 2;
  let n = 0;
  for (let y = box.y0; y <= box.y1; y++) {
    for (let x = box.x0; x <= box.x1; x++) {
      const i = (y * img.width + x) * 3;
      const [r, g, b] = [img.rgb[i], img.rgb[i + 1], img.rgb[i + 2]];
      if ((r - br) ** 2 + (g - bg) ** 2 + (b - bb) ** 2 <= t2) continue;
      const q = (v: number) => Math.min(LEVELS - 1, Math.floor((v * LEVELS) / 256));
      h[(q(r) * LEVELS + q(g)) * LEVELS + q(b)]++;
      n++;
    }
  }
  if (n > 0) { for (let k = 0; k < h.length; k++) h[k] /= n; }
  return h;
}

/**
 * Normalized colour histogram of every foreground pixel of an image (farther than the threshold from its
 * background's colour), whatever the objects: how much of a subject's colours an image shows, even when the
 * analyzer cannot separate blurry or touching objects.
 */
export function foregroundHistogram(
  img: RgbImage,
  analysis: ImageAnalysis = analyzeImage(img),
): Float64Array {
  return histogramIn(img, analysis, { x0: 0, y0: 0, x1: img.width - 1, y1: img.height - 1 });
}

/** Mean foreground-histogram intersection of generated images with a subject's training objects, in [0, 1]. */
export function foregroundSimilarity(generated: RgbImage[], subject: SubjectProfile): number {
  if (!generated.length || !subject.histograms.length) return 0;
  let sum = 0;
  for (const img of generated) {
    const h = foregroundHistogram(img);
    sum += subject.histograms.reduce((s, t) => s + histogramIntersection(h, t), 0) /
      subject.histograms.length;
  }
  return sum / generated.length;
}

/** Histogram intersection, 1 for equal normalized histograms, 0 when either is empty. */
export function histogramIntersection(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let k = 0; k < a.length; k++) s += Math.min(a[k], b[k]);
  return s;
}

/** The subject as its training images show it: majority shape, colour and texture of their largest object. */
export function subjectProfile(training: RgbImage[]): SubjectProfile {
  if (!training.length) throw new RangeError("a subject profile needs at least one training image");
  const mains: AnalyzedObject[] = [];
  const histograms: Float64Array[] = [];
  for (const img of training) {
    const a = analyzeImage(img);
    const main = a.objects[0];
    if (!main) continue;
    mains.push(main);
    histograms.push(objectHistogram(img, a, main));
  }
  return {
    shape: majority(mains.map((o) => o.shape)),
    colour: majority(mains.map((o) => o.colour)),
    texture: majority(mains.map((o) => o.texture)),
    histograms,
  };
}

/**
 * How faithfully generated images show the subject (see the module comment). Each image's object that agrees
 * with the subject on the most attributes counts (a prompt may add other objects).
 *
 * @example
 * ```ts
 * shapesWorldFidelity(trainingImages, trainingImages).score; // 1
 * ```
 */
export function shapesWorldFidelity(
  generated: RgbImage[],
  subject: RgbImage[] | SubjectProfile,
): FidelityScores {
  if (!generated.length) throw new RangeError("no generated images to score");
  const p = Array.isArray(subject) ? subjectProfile(subject) : subject;
  const images = generated.map((img): ImageFidelity => {
    const a = analyzeImage(img);
    let best: { o: AnalyzedObject; hits: number } | null = null;
    for (const o of a.objects) {
      const hits = Number(o.shape === p.shape) + Number(o.colour === p.colour) +
        Number(o.texture === p.texture);
      if (!best || hits > best.hits) best = { o, hits };
    }
    if (!best) return { found: false, shape: false, colour: false, texture: false, histogram: 0 };
    const h = objectHistogram(img, a, best.o);
    const histogram = p.histograms.length
      ? p.histograms.reduce((s, t) => s + histogramIntersection(h, t), 0) / p.histograms.length
      : 0;
    return {
      found: true,
      shape: best.o.shape === p.shape,
      colour: best.o.colour === p.colour,
      texture: best.o.texture === p.texture,
      histogram,
    };
  });
  const rate = (k: "shape" | "colour" | "texture") => images.filter((i) => i[k]).length / images.length;
  const shape = rate("shape"), colour = rate("colour"), texture = rate("texture");
  const histogram = images.reduce((s, i) => s + i.histogram, 0) / images.length;
  return { shape, colour, texture, histogram, score: (shape + colour + texture + histogram) / 4, images };
}

export interface PriorDrift {
  /** Mean absolute per-pixel difference over all channels, in [0, 1]. */
  pixel: number;
  /** Mean share of disagreeing attributes (background; main object's shape, colour, texture), in [0, 1]. */
  attributes: number;
  pairs: { pixel: number; attributes: number }[];
}

/**
 * Drift between two models' images of the same prompts and seeds (`base[i]` and `trained[i]` paired).
 *
 * @example
 * ```ts
 * priorDrift(baseImages, baseImages); // { pixel: 0, attributes: 0, ... }
 * ```
 */
export function priorDrift(base: RgbImage[], trained: RgbImage[]): PriorDrift {
  if (base.length !== trained.length || !base.length) {
    throw new RangeError(`need paired images (at least one), got ${base.length} and ${trained.length}`);
  }
  const pairs = base.map((a, i) => {
    const b = trained[i];
    if (a.width !== b.width || a.height !== b.height) {
      throw new RangeError(`pair ${i}: ${a.width}x${a.height} and ${b.width}x${b.height} images`);
    }
    let d = 0;
    for (let k = 0; k < a.rgb.length; k++) d += Math.abs(a.rgb[k] - b.rgb[k]);
    const pa = analyzeImage(a), pb = analyzeImage(b);
    const oa = pa.objects[0], ob = pb.objects[0];
    const differ = [
      pa.background !== pb.background,
      oa?.shape !== ob?.shape,
      oa?.colour !== ob?.colour,
      oa?.texture !== ob?.texture,
    ];
    return { pixel: d / (a.rgb.length * 255), attributes: differ.filter(Boolean).length / differ.length };
  });
  const mean = (k: "pixel" | "attributes") => pairs.reduce((s, p) => s + p[k], 0) / pairs.length;
  return { pixel: mean("pixel"), attributes: mean("attributes"), pairs };
}
