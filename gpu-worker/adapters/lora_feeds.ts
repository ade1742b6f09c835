/**
 * LoRA slot feeds: every adapter that has factors for a slot's module rides on it, concatenated along the
 * rank, so one session serves any mix of adapters (and of ranks) without being rebuilt. The factors are
 * concatenated once per generation; each step only rebuilds the scales (sliders switch on at a timestep,
 * CIDM weighs each layer). Used by the pipeline and by the trainer's frozen UNet.
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

type Use = AdapterUse & { region?: number };

/**
 * The factors of every slot of `modules` for a set of adapters, concatenated along the rank once (they do
 * not change during a generation; only the scales do, see {@link scaleFeeds}).
 */
export interface PreparedLoraSlots {
  /** The down, up (and region) feeds, fixed for the run. */
  feeds: Record<string, Tensor>;
  /** Per slot with adapters: its scale input and each adapter's rows. */
  scales: { path: string; name: string; rank: number; rows: { use: Use; from: number; rank: number }[] }[];
}

/**
 * Concatenates the adapters' factors per slot (and, in a regional graph, one region index per rank row:
 * 0 the whole image, r + 1 region r); a slot no adapter uses gets one zero row.
 */
export function prepareLoraSlots(
  modules: readonly LoraModule[],
  adapters: readonly Use[],
  regional = false,
): PreparedLoraSlots {
  const feeds: Record<string, Tensor> = {};
  const scales: PreparedLoraSlots["scales"] = [];
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
    const region: number[] = [];
    const rows: PreparedLoraSlots["scales"][number]["rows"] = [];
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
      for (let r = 0; r < w.rank; r++) region.push(a.region ?? 0);
      rows.push({ use: a, from: r0, rank: w.rank });
      r0 += w.rank;
    }
    feeds[names.down] = Tensor.f32([rank, m.inFeatures], down);
    feeds[names.up] = Tensor.f32([m.outFeatures, rank], up);
    if (regional) feeds[loraRegionInput(m.path)] = Tensor.i64([rank], region);
    scales.push({ path: m.path, name: names.scale, rank, rows });
  }
  return { feeds, scales };
}

/**
 * The prepared slots' feeds at a step: each rank row's scale is its adapter's scale at this step and module,
 * times alpha / rank.
 */
export function scaleFeeds(
  p: PreparedLoraSlots,
  step: number,
  total: number,
  timestep = Number.NaN,
): Record<string, Tensor> {
  const feeds: Record<string, Tensor> = { ...p.feeds };
  for (const slot of p.scales) {
    const scale = new Float32Array(slot.rank);
    for (const { use: a, from, rank } of slot.rows) {
      const s = typeof a.scale === "function" ? a.scale(step, total, slot.path, timestep) : a.scale;
      if (!Number.isFinite(s)) {
        throw new AdapterError(
          `adapter "${a.lora.name}": scale at ${slot.path}, step ${step} is ${s}, not a number`,
        );
      }
      scale.fill(s * ((a.lora.alpha ?? rank) / rank), from, from + rank);
    }
    feeds[slot.name] = Tensor.f32([slot.rank], scale);
  }
  return feeds;
}

/** Both at once, for one run: {@link prepareLoraSlots} then {@link scaleFeeds}. */
export function loraSlotFeeds(
  modules: readonly LoraModule[],
  adapters: readonly Use[],
  step: number,
  total: number,
  regional = false,
  timestep = Number.NaN,
): Record<string, Tensor> {
  return scaleFeeds(prepareLoraSlots(modules, adapters, regional), step, total, timestep);
}
