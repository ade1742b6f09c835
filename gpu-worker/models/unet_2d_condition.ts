/**
 * UNet2DConditionModel (SD 1.x / 2.x) built as an ONNX graph from a diffusers `config.json`, with diffusers'
 * parameter names: time embedding, down blocks (CrossAttnDownBlock2D / DownBlock2D), UNetMidBlock2DCrossAttn,
 * up blocks with skip connections, Transformer2DModel with BasicTransformerBlock (self-attention,
 * cross-attention on the text, GEGLU feed-forward). Epsilon and v-prediction differ only in the scheduler.
 *
 * Graph inputs: `sample` [B, C, H, W], `timestep` float32 [B], `encoder_hidden_states` [B, L, D];
 * output `out_sample` (plus LoRA slot inputs when asked for). The context's length L is free (77 text
 * tokens, SeeCoder's 148 image queries, ...); its width must be `cross_attention_dim`. With
 * `ModelContext`'s `conditioning`, each cross-attention may read its own context and regions (see
 * `conditioning.ts`).
 *
 * @example
 * ```ts
 * const g = new GraphBuilder("unet");
 * const ctx = new ModelContext(g, WeightSource.random(0));
 * buildUNet2DCondition(ctx, parseUNetConfig(json));
 * ```
 */
import type { Dim, Value } from "../graph/builder.ts";
import * as ops from "../graph/ops.ts";
import type { ModelContext } from "./layers.ts";
import { blockContextInput, blockRegionContextInput, REGION_CONTEXT_INPUT } from "./conditioning.ts";

export interface UNetConfig {
  sample_size: number;
  in_channels: number;
  out_channels: number;
  flip_sin_to_cos: boolean;
  freq_shift: number;
  down_block_types: string[];
  mid_block_type: string;
  up_block_types: string[];
  block_out_channels: number[];
  layers_per_block: number;
  downsample_padding: number;
  mid_block_scale_factor: number;
  act_fn: string;
  norm_num_groups: number;
  norm_eps: number;
  cross_attention_dim: number;
  transformer_layers_per_block: number;
  /** Heads per block (diffusers reads `attention_head_dim` as the head count when `num_attention_heads` is unset). */
  heads: number[];
  use_linear_projection: boolean;
  upcast_attention: boolean;
  only_cross_attention: boolean;
  conv_in_kernel: number;
  conv_out_kernel: number;
  center_input_sample: boolean;
  prediction_type?: string;
}

/**
 * Graph dims (numbers make every shape static, which training graphs want) and, for graphs that compose
 * models, values to use instead of declaring inputs, and whether to skip declaring the output.
 */
export interface GraphDims {
  batch?: number | string;
  height?: number | string;
  width?: number | string;
  sequence?: number | string;
  sample?: Value;
  timestep?: Value;
  encoderHiddenStates?: Value;
  noOutput?: boolean;
}

const SUPPORTED_DOWN = ["CrossAttnDownBlock2D", "DownBlock2D"];
const SUPPORTED_UP = ["CrossAttnUpBlock2D", "UpBlock2D"];

/** Reads a diffusers UNet config (defaults as diffusers'), refusing what this builder does not implement. */
export function parseUNetConfig(raw: Record<string, unknown>): UNetConfig {
  const get = <T>(k: string, d: T): T => (raw[k] ?? d) as T;
  const boc = get<number[]>("block_out_channels", [320, 640, 1280, 1280]);
  const down = get<string[]>("down_block_types", [
    "CrossAttnDownBlock2D",
    "CrossAttnDownBlock2D",
    "CrossAttnDownBlock2D",
    "DownBlock2D",
  ]);
  const up = get<string[]>("up_block_types", [
    "UpBlock2D",
    "CrossAttnUpBlock2D",
    "CrossAttnUpBlock2D",
    "CrossAttnUpBlock2D",
  ]);
  for (const t of down) {
    if (!SUPPORTED_DOWN.includes(t)) {
      throw new RangeError(
        `down block type "${t}" is not supported; expected one of ${SUPPORTED_DOWN.join(", ")}`,
      );
    }
  }
  for (const t of up) {
    if (!SUPPORTED_UP.includes(t)) {
      throw new RangeError(
        `up block type "${t}" is not supported; expected one of ${SUPPORTED_UP.join(", ")}`,
      );
    }
  }
  if (down.length !== boc.length || up.length !== boc.length) {
    throw new RangeError(
      `config has ${boc.length} block_out_channels but ${down.length} down and ${up.length} up block types; they must match`,
    );
  }
  const mid = get<string | null>("mid_block_type", "UNetMidBlock2DCrossAttn");
  if (mid !== "UNetMidBlock2DCrossAttn") {
    throw new RangeError(`mid_block_type "${mid}" is not supported; expected UNetMidBlock2DCrossAttn`);
  }
  for (const k of ["class_embed_type", "addition_embed_type", "encoder_hid_dim", "time_cond_proj_dim"]) {
    if (raw[k] !== undefined && raw[k] !== null) {
      throw new RangeError(`config field "${k}" = ${JSON.stringify(raw[k])} is not supported`);
    }
  }
  const lpb = get<number | number[]>("layers_per_block", 2);
  const tlpb = get<number | number[]>("transformer_layers_per_block", 1);
  if (Array.isArray(lpb) || Array.isArray(tlpb)) {
    throw new RangeError("per-block layers_per_block / transformer_layers_per_block lists are not supported");
  }
  const headsRaw = raw.num_attention_heads ?? raw.attention_head_dim ?? 8;
  const heads = Array.isArray(headsRaw) ? headsRaw as number[] : boc.map(() => headsRaw as number);
  if (heads.length !== boc.length) {
    throw new RangeError(`attention heads list has ${heads.length} entries, expected ${boc.length}`);
  }
  const cad = get<number | number[]>("cross_attention_dim", 1280);
  if (Array.isArray(cad)) throw new RangeError("per-block cross_attention_dim lists are not supported");
  const act = get("act_fn", "silu");
  if (act !== "silu") throw new RangeError(`act_fn "${act}" is not supported; expected silu`);
  return {
    sample_size: get("sample_size", 64),
    in_channels: get("in_channels", 4),
    out_channels: get("out_channels", 4),
    flip_sin_to_cos: get("flip_sin_to_cos", true),
    freq_shift: get("freq_shift", 0),
    down_block_types: down,
    mid_block_type: mid,
    up_block_types: up,
    block_out_channels: boc,
    layers_per_block: lpb,
    downsample_padding: get("downsample_padding", 1),
    mid_block_scale_factor: get("mid_block_scale_factor", 1),
    act_fn: act,
    norm_num_groups: get("norm_num_groups", 32),
    norm_eps: get("norm_eps", 1e-5),
    cross_attention_dim: cad,
    transformer_layers_per_block: tlpb,
    heads,
    use_linear_projection: get("use_linear_projection", false),
    upcast_attention: get("upcast_attention", false),
    only_cross_attention: get("only_cross_attention", false) as boolean,
    conv_in_kernel: get("conv_in_kernel", 3),
    conv_out_kernel: get("conv_out_kernel", 3),
    center_input_sample: get("center_input_sample", false),
  };
}

/** Sinusoidal timestep features (diffusers' Timesteps / get_timestep_embedding), t float32 [B] -> [B, dim]. */
export function timestepEmbedding(
  ctx: ModelContext,
  t: Value,
  dim: number,
  flipSinToCos: boolean,
  shift: number,
): Value {
  const g = ctx.g;
  const half = Math.floor(dim / 2);
  const freqs = new Float32Array(half);
  for (let i = 0; i < half; i++) freqs[i] = Math.exp((-Math.log(10000) * i) / (half - shift));
  const args = g.op("Mul", [g.op("Unsqueeze", [t, g.ints([1])]), g.constant(freqs, [1, half])]);
  const sin = g.op("Sin", [args]);
  const cos = g.op("Cos", [args]);
  return g.op("Concat", flipSinToCos ? [cos, sin] : [sin, cos], { axis: 1 });
}

/** ResnetBlock2D: norm, silu, conv, + time projection, norm, silu, conv, + (shortcut) input. */
export function resnetBlock2D(
  ctx: ModelContext,
  x: Value,
  inC: number,
  outC: number,
  o: { tembAct?: Value | null; tembC?: number; groups: number; eps: number; outputScale?: number },
): Value {
  const g = ctx.g;
  let h = ops.silu(g, ctx.groupNorm("norm1", x, o.groups, inC, o.eps));
  h = ctx.conv("conv1", h, inC, outC, 3);
  if (o.tembAct) {
    const t = ctx.at({ kind: "global" }, () => ctx.linear("time_emb_proj", o.tembAct!, o.tembC!, outC));
    h = g.op("Add", [h, g.op("Unsqueeze", [t, g.ints([2, 3])])]);
  }
  h = ops.silu(g, ctx.groupNorm("norm2", h, o.groups, outC, o.eps));
  h = ctx.conv("conv2", h, outC, outC, 3);
  const skip = inC !== outC ? ctx.conv("conv_shortcut", x, inC, outC, 1) : x;
  let y = g.op("Add", [skip, h]);
  if (o.outputScale && o.outputScale !== 1) y = g.op("Div", [y, g.scalar(o.outputScale)]);
  return y;
}

/** diffusers' Attention (to_q/to_k/to_v/to_out.0) on sequences; `context` null means self-attention. */
export function attentionBlock(
  ctx: ModelContext,
  x: Value,
  context: Value | null,
  queryDim: number,
  contextDim: number,
  heads: number,
  headDim: number,
  qkvBias: boolean,
): Value {
  const inner = heads * headDim;
  const src = context ?? x;
  const srcDim = context ? contextDim : queryDim;
  const q = ctx.linear("to_q", x, queryDim, inner, qkvBias);
  const k = ctx.linear("to_k", src, srcDim, inner, qkvBias);
  const v = ctx.linear("to_v", src, srcDim, inner, qkvBias);
  const a = ops.attention(ctx.g, q, k, v, heads, headDim);
  return ctx.scope("to_out", () => ctx.linear("0", a, inner, queryDim, true));
}

/** The graph's global context and the dims its conditioning inputs are declared with. */
export interface ContextSource {
  ehs: Value;
  batch: Dim;
  sequence: Dim;
}

/**
 * The cross-attention (attn2) of a transformer block, asking the conditioning hook for its context: the
 * global one, its own block's (per-block graphs), and regions (regional graphs), where each region's
 * attention output replaces the global one inside its mask. The context's K/V are computed once over the
 * global and region contexts stacked along the batch.
 */
function crossAttention(
  ctx: ModelContext,
  x: Value,
  src: ContextSource,
  dim: number,
  heads: number,
  headDim: number,
  cfg: UNetConfig,
): Value {
  const g = ctx.g;
  const D = cfg.cross_attention_dim;
  const path = g.path();
  const perBlock = !!ctx.opts.conditioning?.perBlockContext;
  const seq = perBlock ? `sequence.${path}` : src.sequence;
  const context = perBlock ? g.input(blockContextInput(path), "float32", [src.batch, seq, D]) : src.ehs;
  const masks = ctx.regions();
  if (!masks) return attentionBlock(ctx, x, context, dim, D, heads, headDim, false);
  const regionContext = perBlock
    ? g.input(blockRegionContextInput(path), "float32", ["regions", src.batch, seq, D])
    : ctx.sharedInput(REGION_CONTEXT_INPUT, ["regions", src.batch, seq, D]);
  const inner = heads * headDim;
  const site = ctx.currentSite;
  const chunks = g.op("Add", [g.op("Shape", [masks.masks], { end: 1 }), g.ints([1])]);
  const stacked = g.op("Concat", [
    context,
    g.op("Reshape", [
      regionContext,
      g.op("Concat", [g.ints([-1]), g.op("Shape", [regionContext], { start: 2 })], {
        axis: 0,
      }),
    ]),
  ], { axis: 0 });
  const q = ctx.linear("to_q", x, dim, inner, false);
  const [k, v] = ctx.at({ kind: "contexts" }, () => [
    ctx.linear("to_k", stacked, D, inner, false),
    ctx.linear("to_v", stacked, D, inner, false),
  ]);
  const qShape = g.op("Shape", [q]);
  const tiled = g.op("Expand", [
    g.op("Unsqueeze", [q, g.ints([0])]),
    g.op("Concat", [chunks, g.ints([1, 1, 1])], { axis: 0 }),
  ]);
  const qAll = g.op("Reshape", [
    tiled,
    g.op("Concat", [g.ints([-1]), g.op("Shape", [q], { start: 1 })], { axis: 0 }),
  ]);
  const a = ops.attention(g, qAll, k, v, heads, headDim);
  const perChunk = g.op("Reshape", [a, g.op("Concat", [chunks, qShape], { axis: 0 })]);
  if (site.kind !== "pixels") throw new Error(`regional cross-attention at ${path} needs a pixel level`);
  const { weights } = masks.at(site.level);
  const mixed = g.op("ReduceSum", [
    g.op("Mul", [perChunk, g.op("Unsqueeze", [weights, g.ints([3])])]),
    g.ints([0]),
  ], { keepdims: 0 });
  return ctx.scope("to_out", () => ctx.linear("0", mixed, inner, dim, true));
}

/** BasicTransformerBlock: self-attention, cross-attention, GEGLU feed-forward, each pre-norm + residual. */
function basicTransformerBlock(
  ctx: ModelContext,
  x: Value,
  src: ContextSource,
  dim: number,
  heads: number,
  cfg: UNetConfig,
) {
  const g = ctx.g;
  const headDim = dim / heads;
  const ehs = src.ehs;
  const selfCtx = cfg.only_cross_attention ? ehs : null;
  // Each norm is a sibling of its attention module, so it is computed outside the attention's scope.
  const n1 = ctx.layerNorm("norm1", x, dim, 1e-5);
  let h = g.op("Add", [
    ctx.scope(
      "attn1",
      () => attentionBlock(ctx, n1, selfCtx, dim, cfg.cross_attention_dim, heads, headDim, false),
    ),
    x,
  ]);
  const n2 = ctx.layerNorm("norm2", h, dim, 1e-5);
  h = g.op("Add", [
    ctx.scope("attn2", () => crossAttention(ctx, n2, src, dim, heads, headDim, cfg)),
    h,
  ]);
  const n3 = ctx.layerNorm("norm3", h, dim, 1e-5);
  const ff = ctx.scope("ff", () =>
    ctx.scope("net", () => {
      const proj = ctx.scope("0", () => ctx.linear("proj", n3, dim, dim * 8));
      const [hidden, gate] = ops.chunk(g, proj, 2, -1);
      const act = g.op("Mul", [hidden, ops.gelu(g, gate)]);
      return ctx.linear("2", act, dim * 4, dim);
    }));
  return g.op("Add", [ff, h]);
}

/** Transformer2DModel (continuous input): group norm, proj_in, transformer blocks, proj_out, + residual. */
export function transformer2D(
  ctx: ModelContext,
  x: Value,
  src: ContextSource,
  channels: number,
  heads: number,
  cfg: UNetConfig,
): Value {
  const g = ctx.g;
  const normed = ctx.groupNorm("norm", x, cfg.norm_num_groups, channels, 1e-6);
  let seq: Value;
  if (cfg.use_linear_projection) {
    seq = ctx.linear("proj_in", ops.toSequence(g, normed, channels), channels, channels);
  } else {
    seq = ops.toSequence(g, ctx.conv("proj_in", normed, channels, channels, 1), channels);
  }
  for (let i = 0; i < cfg.transformer_layers_per_block; i++) {
    seq = ctx.scope(
      "transformer_blocks",
      () => ctx.scope(i, () => basicTransformerBlock(ctx, seq, src, channels, heads, cfg)),
    );
  }
  let out: Value;
  if (cfg.use_linear_projection) {
    out = ops.fromSequence(g, ctx.linear("proj_out", seq, channels, channels), x);
  } else {
    out = ctx.conv("proj_out", ops.fromSequence(g, seq, x), channels, channels, 1);
  }
  return g.op("Add", [out, x]);
}

/** Appends the UNet to `ctx.g`: declares its inputs and its output `out_sample`. */
export function buildUNet2DCondition(
  ctx: ModelContext,
  cfg: UNetConfig,
  io: GraphDims = {},
): Value {
  const g = ctx.g;
  const B = io.batch ?? "batch";
  const H = io.height ?? "height", W = io.width ?? "width";
  const boc = cfg.block_out_channels;
  const sample = io.sample ?? g.input("sample", "float32", [B, cfg.in_channels, H, W]);
  const timestep = io.timestep ?? g.input("timestep", "float32", [B]);
  const sequence = io.sequence ?? "sequence";
  const ehs = io.encoderHiddenStates ??
    g.input("encoder_hidden_states", "float32", [B, sequence, cfg.cross_attention_dim]);
  const src: ContextSource = { ehs, batch: B, sequence };
  const px = (level: number) => ({ kind: "pixels" as const, level });
  const tembC = boc[0] * 4;
  const res = { groups: cfg.norm_num_groups, eps: cfg.norm_eps, tembC };

  // Time embedding; every resnet applies silu to it first, so do that once.
  const tproj = timestepEmbedding(ctx, timestep, boc[0], cfg.flip_sin_to_cos, cfg.freq_shift);
  const temb = ctx.at({ kind: "global" }, () =>
    ctx.scope("time_embedding", () => {
      const h = ops.silu(g, ctx.linear("linear_1", tproj, boc[0], tembC));
      return ctx.linear("linear_2", h, tembC, tembC);
    }));
  const tembAct = ops.silu(g, temb);

  let x = sample;
  if (cfg.center_input_sample) x = g.op("Sub", [g.op("Mul", [x, g.scalar(2)]), g.scalar(1)]);
  x = ctx.at(px(0), () => ctx.conv("conv_in", x, cfg.in_channels, boc[0], cfg.conv_in_kernel));
  const skips: { v: Value; c: number }[] = [{ v: x, c: boc[0] }];

  let outC = boc[0];
  cfg.down_block_types.forEach((type, i) => {
    const inC = outC;
    outC = boc[i];
    const last = i === boc.length - 1;
    ctx.scope("down_blocks", () =>
      ctx.scope(i, () => {
        ctx.at(px(i), () => {
          for (let j = 0; j < cfg.layers_per_block; j++) {
            x = ctx.scope("resnets", () =>
              ctx.scope(j, () => resnetBlock2D(ctx, x, j === 0 ? inC : outC, outC, { ...res, tembAct })));
            if (type === "CrossAttnDownBlock2D") {
              x = ctx.scope("attentions", () =>
                ctx.scope(j, () =>
                  transformer2D(ctx, x, src, outC, cfg.heads[i], cfg)));
            }
            skips.push({ v: x, c: outC });
          }
        });
        if (!last) {
          x = ctx.at(px(i + 1), () =>
            ctx.scope("downsamplers", () =>
              ctx.scope(0, () =>
                ctx.conv("conv", x, outC, outC, 3, { stride: 2, padding: cfg.downsample_padding }))));
          skips.push({ v: x, c: outC });
        }
      }));
  });

  const midC = boc[boc.length - 1];
  x = ctx.at(px(boc.length - 1), () =>
    ctx.scope("mid_block", () => {
      const o = { ...res, tembAct, outputScale: cfg.mid_block_scale_factor };
      let h = ctx.scope("resnets", () => ctx.scope(0, () => resnetBlock2D(ctx, x, midC, midC, o)));
      for (let l = 0; l < 1; l++) {
        h = ctx.scope(
          "attentions",
          () => ctx.scope(l, () => transformer2D(ctx, h, src, midC, cfg.heads[cfg.heads.length - 1], cfg)),
        );
        h = ctx.scope("resnets", () => ctx.scope(l + 1, () => resnetBlock2D(ctx, h, midC, midC, o)));
      }
      return h;
    }));

  const rev = [...boc].reverse();
  const revHeads = [...cfg.heads].reverse();
  let prevC: number;
  outC = rev[0];
  cfg.up_block_types.forEach((type, i) => {
    prevC = outC;
    outC = rev[i];
    const last = i === boc.length - 1;
    const layers = cfg.layers_per_block + 1;
    const level = boc.length - 1 - i;
    ctx.scope("up_blocks", () =>
      ctx.scope(i, () => {
        ctx.at(px(level), () => {
          for (let j = 0; j < layers; j++) {
            const skip = skips.pop()!;
            const resIn = j === 0 ? prevC : outC;
            x = g.op("Concat", [x, skip.v], { axis: 1 });
            const inC = resIn + skip.c;
            x = ctx.scope("resnets", () =>
              ctx.scope(j, () => resnetBlock2D(ctx, x, inC, outC, { ...res, tembAct })));
            if (type === "CrossAttnUpBlock2D") {
              x = ctx.scope("attentions", () =>
                ctx.scope(j, () =>
                  transformer2D(ctx, x, src, outC, revHeads[i], cfg)));
            }
          }
        });
        if (!last) {
          x = ctx.at(px(level - 1), () =>
            ctx.scope("upsamplers", () =>
              ctx.scope(0, () =>
                ctx.conv("conv", ops.upsampleNearest2x(g, x), outC, outC, 3))));
        }
      }));
  });

  x = ops.silu(g, ctx.groupNorm("conv_norm_out", x, cfg.norm_num_groups, boc[0], cfg.norm_eps));
  x = ctx.at(px(0), () => ctx.conv("conv_out", x, boc[0], cfg.out_channels, cfg.conv_out_kernel));
  return io.noOutput ? x : g.output(x, "out_sample", [B, cfg.out_channels, H, W]);
}
