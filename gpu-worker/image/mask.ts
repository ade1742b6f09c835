/**
 * Inpainting masks: which pixels of the image a prediction repaints. One rule serves the native API and
 * OpenAI's: a mask with any transparent pixel repaints where it is transparent (alpha below half, OpenAI's
 * "fully transparent areas indicate where the image should be edited"); an opaque mask repaints where it is
 * light (luminance at least half: white repaints, black keeps, as diffusers' inpainting masks). On the latent
 * grid each cell takes the pixel at its centre (nearest, as diffusers' `interpolate` of the mask).
 *
 * @example
 * ```ts
 * const mask = decodeMask(pngBytes, "input.mask"); // { width, height, repaint: Uint8Array of 0/1 }
 * const m = maskOnGrid(mask, 16, 16); // Float32Array(256): 1 repaint, 0 keep
 * ```
 */
import { decode } from "fast-png";
import { decodeImage, ImageLoadError } from "../training/data.ts";
import type { RgbImage } from "./png.ts";

/** A pixel mask: `repaint[y * width + x]` is 1 where the prediction repaints, 0 where it keeps the image. */
export interface InpaintMask {
  width: number;
  height: number;
  repaint: Uint8Array;
}

const isPng = (b: Uint8Array) =>
  b.length >= 8 && b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47;

/** An opaque image as a mask: light (luminance >= 0.5) repaints. */
export function maskFromImage(img: RgbImage): InpaintMask {
  const n = img.width * img.height;
  const repaint = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const y = 0.299 * img.rgb[i * 3] + 0.587 * img.rgb[i * 3 + 1] + 0.114 * img.rgb[i * 3 + 2];
    repaint[i] = y >= 127.5 ? 1 : 0;
  }
  return { width: img.width, height: img.height, repaint };
}

/**
 * A mask from an image file (PNG, JPEG or WebP as `decodeImage` reads them): a PNG with an alpha channel and
 * at least one transparent pixel repaints where alpha < 0.5; otherwise light pixels repaint. Errors are
 * ImageLoadErrors naming `source`.
 */
export function decodeMask(bytes: Uint8Array, source: string): InpaintMask {
  if (isPng(bytes)) {
    const img = decodeImage(bytes, source); // size limit and readability checks
    let png;
    try {
      png = decode(bytes);
    } catch (e) {
      throw new ImageLoadError(source, `not a readable PNG (${(e as Error).message})`);
    }
    const { width, height, channels, depth, palette } = png;
    const max = depth === 16 ? 65535 : (1 << depth) - 1;
    const n = width * height;
    const alpha = new Float32Array(n).fill(1);
    let transparent = false;
    for (let i = 0; i < n; i++) {
      let a = 1;
      if (palette) {
        const p = palette[png.data[i]];
        if (p.length > 3) a = p[3] / 255;
      } else if (channels === 2 || channels === 4) a = png.data[i * channels + channels - 1] / max;
      alpha[i] = a;
      if (a < 0.5) transparent = true;
    }
    if (transparent) {
      const repaint = new Uint8Array(n);
      for (let i = 0; i < n; i++) repaint[i] = alpha[i] < 0.5 ? 1 : 0;
      return { width, height, repaint };
    }
    return maskFromImage(img);
  }
  return maskFromImage(decodeImage(bytes, source));
}

/** Share of the mask's pixels that are repainted. */
export function repaintShare(mask: InpaintMask): number {
  let s = 0;
  for (const v of mask.repaint) s += v;
  return s / mask.repaint.length;
}

/**
 * The mask on another grid (h x w: the latents', or the output's pixels): each cell takes the mask pixel at
 * its centre. Returns h * w values, 1 where the cell is repainted, 0 where it keeps the image.
 */
export function maskOnGrid(mask: InpaintMask, h: number, w: number): Float32Array {
  const out = new Float32Array(h * w);
  for (let y = 0; y < h; y++) {
    const sy = Math.min(mask.height - 1, Math.floor(((y + 0.5) * mask.height) / h));
    for (let x = 0; x < w; x++) {
      const sx = Math.min(mask.width - 1, Math.floor(((x + 0.5) * mask.width) / w));
      out[y * w + x] = mask.repaint[sy * mask.width + sx];
    }
  }
  return out;
}
