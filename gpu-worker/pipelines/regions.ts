/**
 * Regional prompts' masks: each region's box (0..1 image coordinates, [x0, y0, x1, y1]) drawn at the latent
 * resolution, with optional feathered edges, as the UNet's `region_masks` input [R, batch, h, w]. The UNet
 * pools them to each block's resolution (see `models/conditioning.ts`).
 *
 * @example
 * ```ts
 * const masks = regionMasks([{ box: [0, 0, 0.5, 1] }, { box: [0.5, 0, 1, 1] }], 2, 16, 16); // [2, 2, 16, 16]
 * ```
 */
import { JobInputError } from "../input_error.ts";
import { Tensor } from "../tensor.ts";
import { MAX_REGIONS } from "../../shared/prediction.ts";

export { MAX_REGIONS };

/**
 * Coverage of latent cell i (of n) by [lo, hi] along one axis: 1 inside, 0 outside, judged at the cell's
 * centre; with `feather` f > 0 a linear ramp of width f centred on each edge.
 */
function coverage(i: number, n: number, lo: number, hi: number, feather: number): number {
  const c = (i + 0.5) / n;
  if (feather <= 0) return c >= lo && c < hi ? 1 : 0;
  const ramp = (d: number) => Math.min(1, Math.max(0, d / feather + 0.5));
  return Math.min(ramp(c - lo), ramp(hi - c));
}

/** Checks the regions' boxes and feathers; RangeError with the region's index and what was expected. */
export function checkRegions(regions: readonly { box: readonly number[]; feather?: number }[]): void {
  if (regions.length > MAX_REGIONS) {
    throw new JobInputError(`at most ${MAX_REGIONS} regions, got ${regions.length}`);
  }
  regions.forEach((r, i) => {
    const b = r.box;
    if (
      !Array.isArray(b) || b.length !== 4 || !b.every((x) => Number.isFinite(x) && x >= 0 && x <= 1) ||
      !(b[0] < b[2] && b[1] < b[3])
    ) {
      throw new JobInputError(
        `regions[${i}].box must be [x0, y0, x1, y1] in 0..1 with x0 < x1 and y0 < y1, got ${
          JSON.stringify(b)
        }`,
      );
    }
    const f = r.feather ?? 0;
    if (!(Number.isFinite(f) && f >= 0 && f <= 0.5)) {
      throw new JobInputError(`regions[${i}].feather must be in 0..0.5, got ${f}`);
    }
  });
}

/** The masks [R, batch, h, w] of the regions (the same for every batch entry). */
export function regionMasks(
  regions: readonly { box: readonly number[]; feather?: number }[],
  batch: number,
  h: number,
  w: number,
): Tensor {
  checkRegions(regions);
  const out = new Float32Array(regions.length * batch * h * w);
  regions.forEach((r, k) => {
    const [x0, y0, x1, y1] = r.box;
    const f = r.feather ?? 0;
    const plane = new Float32Array(h * w);
    for (let y = 0; y < h; y++) {
      const cy = coverage(y, h, y0, y1, f);
      for (let x = 0; x < w; x++) plane[y * w + x] = cy * coverage(x, w, x0, x1, f);
    }
    if (!plane.some((v) => v > 0)) {
      throw new JobInputError(
        `regions[${k}].box ${
          JSON.stringify(r.box)
        } covers no latent pixel centre at ${w}x${h}; make it larger`,
      );
    }
    for (let b = 0; b < batch; b++) out.set(plane, (k * batch + b) * h * w);
  });
  return Tensor.f32([regions.length, batch, h, w], out);
}
