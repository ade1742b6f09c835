/**
 * Gradient clipping by global L2 norm, as torch.nn.utils.clip_grad_norm_: the norm over all gradients taken
 * together; when it exceeds `maxNorm`, every gradient is scaled by maxNorm / (norm + 1e-6).
 *
 * @example
 * ```ts
 * const grads = { a: new Float32Array([3]), b: new Float32Array([4]) };
 * clipGradNorm(grads, 1); // returns 5; grads now ~ {a: [0.6], b: [0.8]}
 * ```
 */

/** L2 norm over every element of every gradient (accumulated in float64). NaN/Infinity propagate. */
export function globalGradNorm(grads: Record<string, Float32Array> | Iterable<Float32Array>): number {
  const arrays = Symbol.iterator in grads ? grads as Iterable<Float32Array> : Object.values(grads);
  let sum = 0;
  for (const g of arrays) {
    for (let i = 0; i < g.length; i++) sum += g[i] * g[i];
  }
  return Math.sqrt(sum);
}

/**
 * Scales `grads` in place so their global norm is at most `maxNorm` (torch's coefficient
 * maxNorm / (norm + 1e-6), applied only when below 1). Returns the norm before clipping; a non-finite norm
 * is returned as is and the gradients are left untouched (the caller decides what divergence means).
 */
export function clipGradNorm(grads: Record<string, Float32Array>, maxNorm: number): number {
  if (!(maxNorm > 0)) throw new RangeError(`clipGradNorm: maxNorm ${maxNorm} must be positive`);
  const norm = globalGradNorm(grads);
  if (!Number.isFinite(norm)) return norm;
  const coef = maxNorm / (norm + 1e-6);
  if (coef < 1) {
    for (const g of Object.values(grads)) {
      for (let i = 0; i < g.length; i++) g[i] *= coef;
    }
  }
  return norm;
}
