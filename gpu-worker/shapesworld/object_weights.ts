/**
 * Per-pixel loss weights that count a scene's objects more than its background, for reconstruction losses
 * (`VaeTrainer`'s `pixelWeights`). A ShapesWorld object covers a few percent of a 64x64 image, yet its colour
 * and shape are what a prompt names; an unweighted mean lets the background decide what the decoder learns.
 *
 * @example
 * ```ts
 * const w = objectPixelWeights([renderScene(scene, 64)], [scene.background], 4); // [1, 1, 64, 64]
 * const m = objectLatentWeights(renderScene(scene, 64), scene.background, 4, 4); // 16 * 16 values
 * ```
 */
import { type ColourName, PALETTE } from "./world.ts";
import type { RgbImage } from "../image/png.ts";
import { Tensor } from "../tensor.ts";

/** Summed |RGB difference| (0-255 units) from the background colour above which a pixel is an object's. */
export const OBJECT_PIXEL_THRESHOLD = 24;

/**
 * Weights [N, 1, H, W]: `1 + objectWeight` on pixels that differ from their image's background colour (the
 * objects and their anti-aliased edges), 1 elsewhere.
 */
export function objectPixelWeights(
  images: readonly RgbImage[],
  backgrounds: readonly ColourName[],
  objectWeight: number,
): Tensor {
  if (images.length === 0 || images.length !== backgrounds.length) {
    throw new RangeError(
      `objectPixelWeights: one background per image expected, got ${images.length} images and ${backgrounds.length} backgrounds`,
    );
  }
  if (!Number.isFinite(objectWeight) || objectWeight < 0) {
    throw new RangeError(
      `objectPixelWeights: objectWeight must be a finite number >= 0, got ${objectWeight}`,
    );
  }
  const { width: w, height: h } = images[0];
  const out = new Float32Array(images.length * w * h);
  images.forEach((img, n) => {
    if (img.width !== w || img.height !== h) {
      throw new RangeError(
        `objectPixelWeights: image ${n} is ${img.width}x${img.height}, expected ${w}x${h}`,
      );
    }
    const bg = PALETTE[backgrounds[n]];
    for (let p = 0; p < w * h; p++) {
      const d = Math.abs(img.rgb[p * 3] - bg[0]) + Math.abs(img.rgb[p * 3 + 1] - bg[1]) +
        Math.abs(img.rgb[p * 3 + 2] - bg[2]);
      out[n * w * h + p] = d > OBJECT_PIXEL_THRESHOLD ? 1 + objectWeight : 1;
    }
  });
  return Tensor.f32([images.length, 1, h, w], out);
}

/**
 * The same at latent resolution, for the diffusion loss's per-pixel mask: each `f` x `f` patch weighs
 * `1 + objectWeight * (share of its pixels that are an object's)`; [H / f * W / f] values, row-major.
 */
export function objectLatentWeights(
  image: RgbImage,
  background: ColourName,
  objectWeight: number,
  f: number,
): Float32Array {
  const { width: w, height: h } = image;
  if (!Number.isInteger(f) || f < 1 || w % f !== 0 || h % f !== 0) {
    throw new RangeError(`objectLatentWeights: factor ${f} must be a positive integer dividing ${w}x${h}`);
  }
  const px = objectPixelWeights([image], [background], objectWeight).f;
  const lw = w / f, out = new Float32Array((h / f) * lw);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) out[Math.floor(y / f) * lw + Math.floor(x / f)] += px[y * w + x] / (f * f);
  }
  return out;
}
