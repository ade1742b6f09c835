/**
 * Concept Sliders at inference: a slider is a LoRA whose scale is 0 while the timestep is above its start
 * (SDEdit-style: the first, structure-setting steps run without it, so the image keeps its layout) and its
 * scale after. Many sliders in one request are many adapters on the same LoRA slots: one UNet evaluation per
 * step whatever their number.
 *
 * @example
 * ```ts
 * await pipe.generate({ prompt, adapters: [{ lora: size, scale: sliderScale(2) }, { lora: dark, scale: sliderScale(-1, 700) }] });
 * ```
 */
import type { StepScale } from "./stable_diffusion.ts";
import type { RgbImage } from "../image/png.ts";

/** The sliders repo's `start_noise` for SD 1.x: off for the first 20% of a 1000-step schedule. */
export const SLIDER_START_TIMESTEP = 800;

/** A slider's scale through the schedule: 0 while the timestep is above `start`, then `scale`. */
export function sliderScale(scale: number, start: number = SLIDER_START_TIMESTEP): StepScale {
  if (!Number.isFinite(scale)) throw new RangeError(`slider scale must be a number, got ${scale}`);
  if (!(Number.isFinite(start) && start >= 0)) {
    throw new RangeError(`slider start must be a timestep >= 0, got ${start}`);
  }
  return (_step, _total, _path, timestep) => (timestep > start ? 0 : scale);
}

/**
 * The images side by side, left to right (a slider grid: one seed at a row of scales). All must be the same
 * height.
 */
export function imageRow(images: readonly RgbImage[]): RgbImage {
  if (!images.length) throw new RangeError("imageRow needs at least one image");
  const h = images[0].height;
  if (images.some((i) => i.height !== h)) throw new RangeError("imageRow: images differ in height");
  const width = images.reduce((s, i) => s + i.width, 0);
  const rgb = new Uint8Array(width * h * 3);
  let x0 = 0;
  for (const img of images) {
    for (let y = 0; y < h; y++) {
      rgb.set(img.rgb.subarray(y * img.width * 3, (y + 1) * img.width * 3), (y * width + x0) * 3);
    }
    x0 += img.width;
  }
  return { width, height: h, rgb };
}

/** Rows of images stacked top to bottom (a slider grid of several seeds: one {@link imageRow} per seed). */
export function imageGrid(rows: readonly (readonly RgbImage[])[]): RgbImage {
  if (!rows.length) throw new RangeError("imageGrid needs at least one row");
  const lines = rows.map(imageRow);
  const width = lines[0].width;
  if (lines.some((l) => l.width !== width)) throw new RangeError("imageGrid: rows differ in width");
  const height = lines.reduce((s, l) => s + l.height, 0);
  const rgb = new Uint8Array(width * height * 3);
  let offset = 0;
  for (const l of lines) {
    rgb.set(l.rgb, offset);
    offset += l.rgb.length;
  }
  return { width, height, rgb };
}
