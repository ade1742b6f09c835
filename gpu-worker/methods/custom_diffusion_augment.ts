/**
 * Custom Diffusion's data augmentation (Kumari et al., CVPR 2023; the official training script's dataset),
 * exactly as METHODS.md states it:
 *   - optional horizontal flip with probability 1/2 (`hflip`);
 *   - with augmentation on, a random target size: with p = 0.66 uniform in [size/3, size], else uniform in
 *     [1.2 size, 1.4 size) (integers, as `np.random.randint`);
 *   - the image is resized to that square size; above `size` a random `size` x `size` crop is taken (loss
 *     everywhere) and the prompt gets "zoomed in " or "close up "; otherwise the image is pasted at a random
 *     place on a zero canvas (0 in [-1, 1], mid grey) and the loss is taken only inside the pasted area's
 *     latent cells shrunk by one cell on each side; below 0.6 size the prompt gets "a far away " or
 *     "very small ".
 * Without augmentation the size is `size` itself: the image covers the canvas and the mask is still the
 * shrunk inner area, as in the official code.
 *
 * @example
 * ```ts
 * const ex = customDiffusionAugment(img64, "a <new1> star", { resolution: 64, vaeScaleFactor: 4 }, rng);
 * ex.prompt; // e.g. "very small a <new1> star"
 * ex.mask.length; // 16 * 16
 * ```
 */
import type { RgbImage } from "../image/png.ts";
import { resizeAntialiased } from "../training/data.ts";
import type { Rng } from "../random.ts";

export interface AugmentOptions {
  /** Training side (the base model's resolution). */
  resolution: number;
  /** Pixels per latent cell (8 for SD, 4 for the tiny model). */
  vaeScaleFactor: number;
  /** Random rescale / paste / crop (default on, as the official script's default). */
  augment?: boolean;
  /** Horizontal flip with probability 1/2 (default off). */
  hflip?: boolean;
}

export interface AugmentedExample {
  /** [3, resolution, resolution] in [-1, 1] (channel-major, as the VAE encoder takes it). */
  image: Float32Array;
  /** [resolution / f, resolution / f] latent loss mask of 0s and 1s. */
  mask: Float32Array;
  prompt: string;
  /** The random size the image was resized to. */
  scale: number;
  /** Where it was pasted (scale <= resolution) or cropped from (scale > resolution). */
  top: number;
  left: number;
  flipped: boolean;
}

/** Prefixes the official script adds for small (pasted below 0.6 size) and large (cropped) images. */
export const SMALL_PREFIXES = ["a far away ", "very small "] as const;
export const LARGE_PREFIXES = ["zoomed in ", "close up "] as const;

/** `np.random.randint(lo, hi)`: an integer in [lo, hi). */
function randint(rng: Rng, lo: number, hi: number): number {
  return lo + rng.int(hi - lo);
}

/** The random size of one example (`resolution` when augmentation is off). */
export function augmentScale(resolution: number, augment: boolean, rng: Rng): number {
  if (!augment) return resolution;
  return rng.uniform() < 0.66
    ? randint(rng, Math.floor(resolution / 3), resolution + 1)
    : randint(rng, Math.floor(1.2 * resolution), Math.floor(1.4 * resolution));
}

function mirrored(img: RgbImage): RgbImage {
  const out = new Uint8Array(img.rgb.length);
  for (let y = 0; y < img.height; y++) {
    for (let x = 0; x < img.width; x++) {
      const s = (y * img.width + (img.width - 1 - x)) * 3, d = (y * img.width + x) * 3;
      out[d] = img.rgb[s];
      out[d + 1] = img.rgb[s + 1];
      out[d + 2] = img.rgb[s + 2];
    }
  }
  return { width: img.width, height: img.height, rgb: out };
}

/**
 * One augmented training example from a square `resolution` x `resolution` image and its prompt. The draws
 * come from `rng` in a fixed order (flip, size, offsets, prefix), so a seeded run replays.
 */
export function customDiffusionAugment(
  img: RgbImage,
  prompt: string,
  o: AugmentOptions,
  rng: Rng,
): AugmentedExample {
  const size = o.resolution, f = o.vaeScaleFactor;
  if (img.width !== size || img.height !== size) {
    throw new RangeError(`augmentation takes a ${size}x${size} image, got ${img.width}x${img.height}`);
  }
  if (!(Number.isInteger(f) && f >= 1 && size % f === 0)) {
    throw new RangeError(`vaeScaleFactor must be a positive integer dividing ${size}, got ${f}`);
  }
  const flipped = o.hflip ? rng.uniform() < 0.5 : false;
  const src = flipped ? mirrored(img) : img;
  const scale = augmentScale(size, o.augment ?? true, rng);
  const resized = scale === size ? src : resizeAntialiased(src, scale, scale);
  const image = new Float32Array(3 * size * size); // the zero canvas
  const lh = size / f;
  const mask = new Float32Array(lh * lh);
  const plane = size * size;
  let top: number, left: number;
  if (scale > size) {
    top = rng.int(scale - size + 1);
    left = rng.int(scale - size + 1);
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const s = ((top + y) * scale + left + x) * 3;
        for (let c = 0; c < 3; c++) image[c * plane + y * size + x] = resized.rgb[s + c] / 127.5 - 1;
      }
    }
    mask.fill(1);
  } else {
    top = rng.int(size - scale + 1);
    left = rng.int(size - scale + 1);
    for (let y = 0; y < scale; y++) {
      for (let x = 0; x < scale; x++) {
        const s = (y * scale + x) * 3;
        for (let c = 0; c < 3; c++) {
          image[c * plane + (top + y) * size + left + x] = resized.rgb[s + c] / 127.5 - 1;
        }
      }
    }
    // mask[top // f + 1 : (top + scale) // f - 1, left // f + 1 : (left + scale) // f - 1] = 1
    const r0 = Math.floor(top / f) + 1, r1 = Math.floor((top + scale) / f) - 1;
    const c0 = Math.floor(left / f) + 1, c1 = Math.floor((left + scale) / f) - 1;
    for (let r = r0; r < r1; r++) for (let c = c0; c < c1; c++) mask[r * lh + c] = 1;
  }
  let p = prompt;
  if (scale < 0.6 * size) p = SMALL_PREFIXES[rng.int(2)] + prompt;
  else if (scale > size) p = LARGE_PREFIXES[rng.int(2)] + prompt;
  return { image, mask, prompt: p, scale, top, left, flipped };
}
