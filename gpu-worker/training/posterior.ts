/**
 * The VAE posterior of a training image as the denoising trainer wants it: the latent mean and standard
 * deviation, both multiplied by the VAE's scaling_factor, packed into one array (mean, then std) so a
 * `LatentCache` entry holds both. Shared by fine-tuning and the methods built on it.
 *
 * @example
 * ```ts
 * const packed = await scaledPosterior(encoder, image, folder.vaeConfig.scaling_factor);
 * const { latent, latentStd } = unpackPosterior(packed);
 * ```
 */
import type { RemoteSession } from "../ort/runner.ts";
import { imagesToTensor, type RgbImage } from "../image/png.ts";
import { Tensor } from "../tensor.ts";

/**
 * Runs the VAE encoder session on one image (RGB, or already a [1, 3, H, W] tensor in [-1, 1]); returns
 * [mean * sf, std * sf] packed.
 */
export async function scaledPosterior(
  encoder: RemoteSession,
  image: RgbImage | Tensor,
  scalingFactor: number,
) {
  const r = await encoder.run({ image: image instanceof Tensor ? image : imagesToTensor([image]) });
  const n = r.latent_mean.f.length;
  const packed = new Float32Array(2 * n);
  for (let i = 0; i < n; i++) {
    packed[i] = r.latent_mean.f[i] * scalingFactor;
    packed[n + i] = Math.exp(0.5 * r.latent_logvar.f[i]) * scalingFactor;
  }
  return packed;
}

/** Views of a packed posterior (no copies). */
export function unpackPosterior(packed: Float32Array): { latent: Float32Array; latentStd: Float32Array } {
  const n = packed.length / 2;
  return { latent: packed.subarray(0, n), latentStd: packed.subarray(n) };
}
