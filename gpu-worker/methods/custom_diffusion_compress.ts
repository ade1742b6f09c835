/**
 * Custom Diffusion's optional compression: each fine-tuned layer keeps only the top singular directions of
 * its change from the base weight, W ≈ W0 + U_k S_k V_kᵀ, stored as LoRA-style factors up = U_k S_k [out, k]
 * and down = V_kᵀ [k, in].
 *
 * How many: METHODS.md's "keep the top 60% singular values (75 MB -> ~15 MB on SD 1.5)" is read as 60% of the
 * singular values' total: the smallest k whose largest singular values sum to at least `fraction` of all of
 * them. (Keeping 60% of their *count* would store 0.6 min(out, in) (out + in) floats, more than 80% of a
 * 320x768 delta, which cannot give the paper's 5x; fine-tuning deltas have fast-decaying spectra, so the
 * mass reading does.)
 *
 * @example
 * ```ts
 * const layer = compressLayer(tuned, base, 320, 768, 0.6); // { kind: "delta", rank, up, down, ... }
 * ```
 */
import type { CustomDiffusionLayer } from "../adapters/custom_diffusion.ts";
import { svd } from "../linalg/dense.ts";

/** The smallest k whose top-k singular values (descending) hold at least `fraction` of their sum (k >= 1). */
export function rankForMass(s: ArrayLike<number>, fraction: number): number {
  if (!(fraction > 0 && fraction <= 1)) throw new RangeError(`compress must be in (0, 1], got ${fraction}`);
  let total = 0;
  for (let i = 0; i < s.length; i++) total += s[i];
  if (!(total > 0)) return 1;
  let acc = 0;
  for (let k = 0; k < s.length; k++) {
    acc += s[k];
    if (acc >= fraction * total * (1 - 1e-12)) return k + 1;
  }
  return s.length;
}

export function compressLayer(
  tuned: Float32Array,
  base: Float32Array,
  out: number,
  inFeatures: number,
  fraction: number,
): CustomDiffusionLayer & { kind: "delta" } {
  if (tuned.length !== out * inFeatures || base.length !== out * inFeatures) {
    throw new RangeError(
      `compressLayer: weights must be [${out}, ${inFeatures}], got ${tuned.length} and ${base.length} values`,
    );
  }
  const delta = new Float64Array(out * inFeatures);
  for (let i = 0; i < delta.length; i++) delta[i] = tuned[i] - base[i];
  const { u, s, v } = svd({ rows: out, cols: inFeatures, data: delta });
  const rank = rankForMass(s, fraction);
  const kk = u.cols;
  const up = new Float32Array(out * rank), down = new Float32Array(rank * inFeatures);
  for (let r = 0; r < out; r++) for (let c = 0; c < rank; c++) up[r * rank + c] = u.data[r * kk + c] * s[c];
  for (let c = 0; c < rank; c++) {
    for (let j = 0; j < inFeatures; j++) down[c * inFeatures + j] = v.data[j * kk + c];
  }
  return { kind: "delta", out, in: inFeatures, rank, up, down };
}
