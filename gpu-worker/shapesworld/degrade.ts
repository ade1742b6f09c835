/**
 * Image degradations that imitate a small diffusion model's outputs (grain and softness), used to check that
 * the ShapesWorld analyzer stays reliable on imperfect images: seeded Gaussian noise and a Gaussian blur.
 *
 * @example
 * ```ts
 * const soft = gaussianBlur(addGaussianNoise(renderScene(scene), 10, new Rng(1)), 0.8);
 * ```
 */
import type { RgbImage } from "../image/png.ts";
import type { Rng } from "../random.ts";

/**
 * Adds independent Gaussian noise of standard deviation `sigma` (0-255 units) to every channel, clamped.
 *
 * @example
 * ```ts
 * const noisy = addGaussianNoise(img, 10, new Rng(0));
 * ```
 */
export function addGaussianNoise(img: RgbImage, sigma: number, rng: Rng): RgbImage {
  const rgb = new Uint8Array(img.rgb.length);
  for (let i = 0; i < rgb.length; i++) {
    rgb[i] = Math.max(0, Math.min(255, Math.round(img.rgb[i] + sigma * rng.gauss())));
  }
  return { width: img.width, height: img.height, rgb };
}

/**
 * Separable Gaussian blur of standard deviation `sigma` pixels (kernel radius ⌈3σ⌉, edges clamped).
 *
 * @example
 * ```ts
 * const soft = gaussianBlur(img, 0.8);
 * ```
 */
export function gaussianBlur(img: RgbImage, sigma: number): RgbImage {
  if (sigma <= 0) return img;
  const { width: w, height: h } = img;
  const radius = Math.ceil(3 * sigma);
  const kernel = Array.from(
    { length: 2 * radius + 1 },
    (_, i) => Math.exp(-((i - radius) ** 2) / (2 * sigma ** 2)),
  );
  const sum = kernel.reduce((a, b) => a + b, 0);
  for (let i = 0; i < kernel.length; i++) kernel[i] /= sum;
  const pass = (src: Float32Array, horizontal: boolean): Float32Array => {
    const out = new Float32Array(src.length);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        for (let c = 0; c < 3; c++) {
          let acc = 0;
          for (let k = -radius; k <= radius; k++) {
            const sx = horizontal ? Math.min(w - 1, Math.max(0, x + k)) : x;
            const sy = horizontal ? y : Math.min(h - 1, Math.max(0, y + k));
            acc += kernel[k + radius] * src[(sy * w + sx) * 3 + c];
          }
          out[(y * w + x) * 3 + c] = acc;
        }
      }
    }
    return out;
  };
  const blurred = pass(pass(Float32Array.from(img.rgb), true), false);
  const rgb = new Uint8Array(blurred.length);
  for (let i = 0; i < rgb.length; i++) rgb[i] = Math.max(0, Math.min(255, Math.round(blurred[i])));
  return { width: w, height: h, rgb };
}
