/**
 * LoRA slot feeds: every adapter that has factors for a slot's module rides on it, concatenated along the
 * rank, so one session serves any mix of adapters (and of ranks) without being rebuilt. Used by the
 * pipeline and by the trainer's frozen UNet.
 *
 * @example
 * ```ts
 * const feeds = loraSlotFeeds(pipe.loraModules, [{ lora, scale: 0.8 }], 0, 20);
 * ```
 */
import { AdapterError } from "../input_error.ts";
import { loraInputNames, type LoraModule } from "../models/layers.ts";
import { loraRegionInput } from "../models/conditioning.ts";
import { Tensor } from "../tensor.ts";
import type { AdapterUse } from "../pipelines/stable_diffusion.ts";

/**
 * LoRA feeds for every slot of `modules`: adapters concatenated along the rank, one scale per rank row (the
 * adapter's scale at this step and module, times alpha / rank), and in a regional graph one region index
 * per row (0: the whole image; r + 1: region r).
 */
export function loraSlotFeeds(
  modules: readonly LoraModule[],
  adapters: readonly (AdapterUse & { region?: number })[],
  step: number,
  total: number,
  regional = false,
  timestep = Number.NaN,
): Record<string, Tensor> {
  const feeds: Record<string, Tensor> = {};
  for (const m of modules) {
    const uses = adapters.filter((a) => a.lora.modules.has(m.path));
    const rank = uses.reduce((r, a) => r + a.lora.modules.get(m.path)!.rank, 0);
    const names = loraInputNames(m.path);
    if (rank === 0) {
      feeds[names.down] = Tensor.zeros([1, m.inFeatures]);
      feeds[names.up] = Tensor.zeros([m.outFeatures, 1]);
      feeds[names.scale] = Tensor.zeros([1]);
      if (regional) feeds[loraRegionInput(m.path)] = Tensor.i64([1], [0]);
      continue;
    }
    const down = new Float32Array(rank * m.inFeatures);
    const up = new Float32Array(m.outFeatures * rank);
    const scale = new Float32Array(rank);
    const region: number[] = [];
    let r0 = 0;
    for (const a of uses) {
      const w = a.lora.modules.get(m.path)!;
      if (w.down.length !== w.rank * m.inFeatures || w.up.length !== m.outFeatures * w.rank) {
        throw new AdapterError(
          `adapter "${a.lora.name}" at ${m.path}: expected down [${w.rank}, ${m.inFeatures}] and up [${m.outFeatures}, ${w.rank}]`,
        );
      }
      down.set(w.down, r0 * m.inFeatures);
      for (let o = 0; o < m.outFeatures; o++) {
        for (let r = 0; r < w.rank; r++) up[o * rank + r0 + r] = w.up[o * w.rank + r];
      }
      const s = typeof a.scale === "function" ? a.scale(step, total, m.path, timestep) : a.scale;
      if (!Number.isFinite(s)) {
        throw new AdapterError(
          `adapter "${a.lora.name}": scale at ${m.path}, step ${step} is ${s}, not a number`,
        );
      }
      scale.fill(s * ((a.lora.alpha ?? w.rank) / w.rank), r0, r0 + w.rank);
      for (let r = 0; r < w.rank; r++) region.push(a.region ?? 0);
      r0 += w.rank;
    }
    feeds[names.down] = Tensor.f32([rank, m.inFeatures], down);
    feeds[names.up] = Tensor.f32([m.outFeatures, rank], up);
    feeds[names.scale] = Tensor.f32([rank], scale);
    if (regional) feeds[loraRegionInput(m.path)] = Tensor.i64([rank], region);
  }
  return feeds;
}
