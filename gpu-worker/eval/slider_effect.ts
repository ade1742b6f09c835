/**
 * How a slider is measured on the tiny world (Concept Sliders' protocol, made exact by the ShapesWorld
 * analyzer): along a row of scales at one seed the slider's attribute should move monotonically (Spearman's
 * rank correlation of the analyzer's measure with the scale), while what it must not touch stays as at scale 0
 * (the largest object's colour, shape and position), and the image's structure moves far less than when the
 * same change is asked for by editing the prompt.
 *
 * @example
 * ```ts
 * spearman([-2, -1, 0, 1, 2], [0.1, 0.18, 0.22, 0.26, 0.3]); // 1
 * ```
 */
import type { RgbImage } from "../image/png.ts";
import { analyzeImage } from "../shapesworld/analysis.ts";

/** Ranks (1-based, ties share their mean rank). */
function ranks(xs: readonly number[]): number[] {
  const order = xs.map((x, i) => [x, i] as const).sort((a, b) => a[0] - b[0]);
  const r = new Array<number>(xs.length);
  for (let i = 0; i < order.length;) {
    let j = i;
    while (j + 1 < order.length && order[j + 1][0] === order[i][0]) j++;
    for (let k = i; k <= j; k++) r[order[k][1]] = (i + j) / 2 + 1;
    i = j + 1;
  }
  return r;
}

/** Spearman's rank correlation (Pearson's on the ranks); 0 when either side is constant. */
export function spearman(xs: readonly number[], ys: readonly number[]): number {
  if (xs.length !== ys.length || xs.length < 2) {
    throw new RangeError(
      `spearman needs two equal-length series of 2+ values, got ${xs.length} and ${ys.length}`,
    );
  }
  const a = ranks(xs), b = ranks(ys);
  const ma = a.reduce((s, v) => s + v, 0) / a.length, mb = b.reduce((s, v) => s + v, 0) / b.length;
  let num = 0, da = 0, db = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - ma) * (b[i] - mb);
    da += (a[i] - ma) ** 2;
    db += (b[i] - mb) ** 2;
  }
  return da === 0 || db === 0 ? 0 : num / Math.sqrt(da * db);
}

/** The largest object's colour, shape and position as the analyzer reads them (null: no object). */
export function mainObject(img: RgbImage) {
  const o = analyzeImage(img).objects[0];
  return o ? { colour: o.colour, shape: o.shape, position: o.position, radius: o.radius } : null;
}

/**
 * The largest object's size as the square root of its pixel share (0: no object): finer than the analyzer's
 * bounding-box radius, which moves in whole pixels (1/64 of the side on the tiny model).
 */
export function objectSize(img: RgbImage): number {
  return Math.sqrt(analyzeImage(img).objects[0]?.pixelFraction ?? 0);
}

/** Luminance (Rec. 601, 0..1) of the background the analyzer reads from the border. */
export function backgroundLuminance(img: RgbImage): number {
  const [r, g, b] = analyzeImage(img).backgroundRgb;
  return (0.299 * r + 0.587 * g + 0.114 * b) / 255;
}

/** Whether the largest objects of two images agree on colour, shape and position (each on its own). */
export function objectAgreement(
  a: RgbImage,
  b: RgbImage,
): { colour: boolean; shape: boolean; position: boolean } {
  const x = mainObject(a), y = mainObject(b);
  if (!x || !y) return { colour: false, shape: false, position: false };
  return { colour: x.colour === y.colour, shape: x.shape === y.shape, position: x.position === y.position };
}

/** Mean absolute pixel difference of two same-size images, 0..1. */
export function pixelDistance(a: RgbImage, b: RgbImage): number {
  if (a.width !== b.width || a.height !== b.height) {
    throw new RangeError(`images differ in size: ${a.width}x${a.height} and ${b.width}x${b.height}`);
  }
  let s = 0;
  for (let i = 0; i < a.rgb.length; i++) s += Math.abs(a.rgb[i] - b.rgb[i]);
  return s / (a.rgb.length * 255);
}
