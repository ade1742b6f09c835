/**
 * Classifier-free guidance with optional guidance rescale (Lin et al. 2023, "Common Diffusion Noise Schedules
 * and Sample Steps are Flawed", section 3.4; diffusers' `guidance_rescale`). Plain guidance moves the model
 * output to `uncond + scale * (cond - uncond)`, whose magnitude grows with the scale; with a zero-terminal-SNR
 * schedule that over-shoots (over-exposed images, and on ShapesWorld a green object pushed past green towards
 * black, which lies further along the same latent direction). Rescale brings each sample's guided output back
 * to the standard deviation of the conditional output and mixes that with the plain result:
 * `phi * guided * std(cond) / std(guided) + (1 - phi) * guided`. The paper recommends phi = 0.7.
 *
 * @example
 * ```ts
 * // batch of 1, 4 values per sample: [uncond | cond]
 * const pred = Float32Array.of(0, 0, 0, 0, 1, -1, 1, -1);
 * classifierFreeGuidance(pred, 1, 5, 0); // [5, -5, 5, -5]
 * classifierFreeGuidance(pred, 1, 5, 1); // [1, -1, 1, -1]
 * ```
 */

/**
 * Combines a [uncond; cond] batch of model outputs (the unconditional half first, then the conditional one,
 * `n` samples each) into `n` guided outputs. `rescale` is phi in [0, 1]; 0 is plain guidance.
 */
export function classifierFreeGuidance(
  pred: Float32Array,
  n: number,
  scale: number,
  rescale = 0,
): Float32Array {
  if (!Number.isInteger(n) || n < 1 || pred.length % (2 * n) !== 0) {
    throw new RangeError(
      `classifierFreeGuidance: expected a [uncond; cond] batch of 2 x ${n} samples, got ${pred.length} values`,
    );
  }
  if (!(rescale >= 0 && rescale <= 1)) {
    throw new RangeError(`guidanceRescale must be in 0..1, got ${rescale}`);
  }
  const half = pred.length / 2, per = half / n;
  const guided = new Float32Array(half);
  for (let k = 0; k < half; k++) guided[k] = pred[k] + scale * (pred[half + k] - pred[k]);
  if (rescale === 0) return guided;
  for (let s = 0; s < n; s++) {
    const g = guided.subarray(s * per, (s + 1) * per);
    const ratio = std(pred.subarray(half + s * per, half + (s + 1) * per)) / (std(g) || 1);
    const k = rescale * ratio + (1 - rescale);
    for (let i = 0; i < per; i++) g[i] *= k;
  }
  return guided;
}

/** Standard deviation with the n - 1 denominator (as torch.std). */
function std(x: Float32Array): number {
  let mean = 0;
  for (const v of x) mean += v;
  mean /= x.length;
  let ss = 0;
  for (const v of x) ss += (v - mean) ** 2;
  return Math.sqrt(ss / Math.max(1, x.length - 1));
}
