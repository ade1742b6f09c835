/**
 * The UNet's conditioning hook, the role diffusers' attention processors play: what each transformer block's
 * cross-attention (attn2) attends to, and which pixels each adapter acts on. A graph is built once per
 * conditioning variant and then serves every request as data:
 *
 * - `perBlockContext`: every attn2 reads its own context input `encoder_hidden_states.<module path>` (CIDM's
 *   layer-wise concept tokens, a SeeCoder embedding in some blocks only, ...); any length, width
 *   `cross_attention_dim`. The pipeline feeds the global context to the blocks a request does not override.
 * - `regions`: regional cross-attention. `region_masks` [R, B, h, w] (soft, 0..1, at the latent resolution) and
 *   region contexts `region_hidden_states` [R, B, L, D] (or one per block with `perBlockContext`). Inside a
 *   region a block's attn2 output comes from that region's context, outside from the global one; where
 *   regions overlap their weights are renormalized so they never sum past 1. The masks are average-pooled to
 *   each block's resolution, so soft edges stay soft.
 * - Region-masked LoRA: in a regional graph every LoRA slot has an int64 input `lora.<path>.region` [rank]
 *   that assigns each rank row to the whole image (0) or to region r (1..R); a region's rows act only inside
 *   its mask (for pixels), only on its own context (attn2 to_k / to_v), and not at all in modules that have no
 *   pixels (the time embedding).
 *
 * @example
 * ```ts
 * const cond: UNetConditioning = { perBlockContext: true, regions: true };
 * buildUNet2DCondition(new ModelContext(g, weights, { lora, conditioning: cond }), cfg);
 * ```
 */
import type { GraphBuilder, Value } from "../graph/builder.ts";

/** Which conditioning inputs a UNet graph declares (absent: the plain graph of one global context). */
export interface UNetConditioning {
  perBlockContext?: boolean;
  regions?: boolean;
}

export const REGION_MASKS_INPUT = "region_masks";
export const REGION_CONTEXT_INPUT = "region_hidden_states";

/** The context input of one cross-attention module in a per-block graph. */
export function blockContextInput(attnPath: string): string {
  return `encoder_hidden_states.${attnPath}`;
}

/** The region-context input of one cross-attention module in a per-block regional graph. */
export function blockRegionContextInput(attnPath: string): string {
  return `${REGION_CONTEXT_INPUT}.${attnPath}`;
}

/** The rank-to-region input of a LoRA slot in a regional graph. */
export function loraRegionInput(path: string): string {
  return `lora.${path}.region`;
}

/**
 * Where an adapter's rows act in the module being built: on pixels at a downsampling level (2^level latent
 * pixels per side), on the contexts of a regional cross-attention (one chunk per region after the global
 * one), or on nothing spatial (only whole-image rows act).
 */
export type GateSite = { kind: "pixels"; level: number } | { kind: "contexts" } | { kind: "global" };

/**
 * Per-level region weights, made once per graph and level: `weights` [R+1, B, N] (row 0 the global prompt's
 * share, 1 - the regions' total; rows 1..R each region's renormalized mask) and `gates` [R+1, B, N] (row 0 all
 * ones: whole-image adapter rows act everywhere).
 */
export class RegionMasks {
  private readonly levels = new Map<number, { weights: Value; gates: Value }>();
  private chunkGatesCache: Value | null = null;

  constructor(readonly g: GraphBuilder, readonly masks: Value) {}

  /** Weights and gates at `level`, flattened to N = (h / 2^level) * (w / 2^level) pixels. */
  at(level: number): { weights: Value; gates: Value } {
    const hit = this.levels.get(level);
    if (hit) return hit;
    const g = this.g;
    const lead = g.op("Shape", [this.masks], { end: 2 });
    let m = this.masks;
    if (level > 0) {
      const k = 2 ** level;
      const pooled = g.op("AveragePool", [g.op("Reshape", [m, g.ints([-1, 1, 0, 0])])], {
        kernel_shape: [k, k],
        strides: [k, k],
      });
      m = pooled;
    }
    const flat = g.op("Reshape", [m, g.op("Concat", [lead, g.ints([-1])], { axis: 0 })]);
    const total = g.op("ReduceSum", [flat, g.ints([0])], { keepdims: 1 });
    const w = g.op("Div", [flat, g.op("Max", [total, g.scalar(1)])]);
    const outside = g.op("Sub", [g.scalar(1), g.op("ReduceSum", [w, g.ints([0])], { keepdims: 1 })]);
    const ones = g.op("Add", [g.op("Mul", [total, g.scalar(0)]), g.scalar(1)]);
    const entry = {
      weights: g.op("Concat", [outside, w], { axis: 0 }),
      gates: g.op("Concat", [ones, w], { axis: 0 }),
    };
    this.levels.set(level, entry);
    return entry;
  }

  /** [R+1, 1] int64: the chunk index of each context chunk of a regional cross-attention (0 = global). */
  chunkIndex(): Value {
    if (this.chunkGatesCache) return this.chunkGatesCache;
    const g = this.g;
    const r1 = g.op("Add", [g.op("Shape", [this.masks], { end: 1 }), g.ints([1])]);
    const count = g.op("Squeeze", [r1, g.ints([0])]);
    const range = g.op("Range", [g.scalar(0, "int64"), count, g.scalar(1, "int64")]);
    this.chunkGatesCache = g.op("Unsqueeze", [range, g.ints([1])]);
    return this.chunkGatesCache;
  }
}

/**
 * The gate of a LoRA slot's rank activations at `site`, for rows assigned by `region` (int64 [r]), shaped to
 * multiply the down projection's output: [B, N, r] for sequences, [B, r, h, w] for feature maps (`spatial`
 * gives h, w from that value), [(R+1)B, 1, r] for context chunks, [1, r] where nothing is spatial.
 */
export function loraGate(
  g: GraphBuilder,
  masks: RegionMasks,
  site: GateSite,
  region: Value,
  layout: "sequence" | "nchw",
  like: Value,
): Value {
  const isGlobal = g.op("Equal", [region, g.scalar(0, "int64")]);
  if (site.kind === "global") {
    return g.op("Unsqueeze", [g.op("Cast", [isGlobal], { to: 1 }), g.ints([0])]);
  }
  if (site.kind === "contexts") {
    // Row j acts on chunk c when it is a whole-image row (j's region 0) or c is its region.
    const mine = g.op("Equal", [masks.chunkIndex(), g.op("Unsqueeze", [region, g.ints([0])])]);
    const on = g.op("Cast", [g.op("Or", [mine, g.op("Unsqueeze", [isGlobal, g.ints([0])])])], { to: 1 });
    // [R+1, r] -> [R+1, B, 1, r] -> [(R+1)B, 1, r]: contexts are stacked chunk-major.
    const batch = g.op("Shape", [masks.masks], { start: 1, end: 2 });
    const shape = g.op("Concat", [g.op("Shape", [on], { end: 1 }), batch, g.ints([1, 1])], { axis: 0 });
    const tiled = g.op("Expand", [g.op("Unsqueeze", [on, g.ints([1, 2])]), shape]);
    const flat = g.op("Concat", [g.ints([-1, 1]), g.op("Shape", [on], { start: 1 })], { axis: 0 });
    return g.op("Reshape", [tiled, flat]);
  }
  const { gates } = masks.at(site.level);
  // [R+1, B, N] gathered by row -> [r, B, N].
  const rows = g.op("Gather", [gates, region], { axis: 0 });
  if (layout === "sequence") return g.op("Transpose", [rows], { perm: [1, 2, 0] });
  const nchw = g.op("Transpose", [rows], { perm: [1, 0, 2] });
  const hw = g.op("Shape", [like], { start: 2 });
  return g.op("Reshape", [nchw, g.op("Concat", [g.ints([0, 0]), hw], { axis: 0 })]);
}
