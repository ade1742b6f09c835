/**
 * AutoencoderKL (the SD VAE) as two ONNX graphs with diffusers' parameter names: the encoder (image in
 * [-1, 1] -> `latent_mean`, `latent_logvar` after quant_conv) and the decoder (`latents` -> post_quant_conv
 * -> `decoded`). Pipelines multiply by `scaling_factor` outside the graphs, as diffusers does.
 *
 * @example
 * ```ts
 * const g = new GraphBuilder("vae_decoder");
 * buildVaeDecoder(new ModelContext(g, WeightSource.random(0)), parseVaeConfig(json));
 * ```
 */
import type { Value } from "../graph/builder.ts";
import * as ops from "../graph/ops.ts";
import type { ModelContext } from "./layers.ts";
import { attentionBlock, resnetBlock2D } from "./unet_2d_condition.ts";

export interface VaeConfig {
  in_channels: number;
  out_channels: number;
  block_out_channels: number[];
  layers_per_block: number;
  latent_channels: number;
  norm_num_groups: number;
  scaling_factor: number;
  shift_factor: number;
  use_quant_conv: boolean;
  use_post_quant_conv: boolean;
  mid_block_add_attention: boolean;
  sample_size: number;
}

/** Reads a diffusers AutoencoderKL config (defaults as diffusers'). */
export function parseVaeConfig(raw: Record<string, unknown>): VaeConfig {
  const get = <T>(k: string, d: T): T => (raw[k] ?? d) as T;
  const boc = get<number[]>("block_out_channels", [64]);
  for (
    const [k, want] of [["down_block_types", "DownEncoderBlock2D"], ["up_block_types", "UpDecoderBlock2D"]]
  ) {
    const types = get<string[]>(k, boc.map(() => want));
    if (types.length !== boc.length || types.some((t) => t !== want)) {
      throw new RangeError(`${k} must be ${boc.length} x "${want}", got ${JSON.stringify(types)}`);
    }
  }
  if (get("act_fn", "silu") !== "silu") {
    throw new RangeError(`act_fn "${raw.act_fn}" is not supported; expected silu`);
  }
  return {
    in_channels: get("in_channels", 3),
    out_channels: get("out_channels", 3),
    block_out_channels: boc,
    layers_per_block: get("layers_per_block", 1),
    latent_channels: get("latent_channels", 4),
    norm_num_groups: get("norm_num_groups", 32),
    scaling_factor: get("scaling_factor", 0.18215),
    shift_factor: get("shift_factor", 0) ?? 0,
    use_quant_conv: get("use_quant_conv", true),
    use_post_quant_conv: get("use_post_quant_conv", true),
    mid_block_add_attention: get("mid_block_add_attention", true),
    sample_size: get("sample_size", 32),
  };
}

const EPS = 1e-6;

/** Graph dims; numbers make every shape static (training graphs). */
export interface VaeDims {
  batch?: number | string;
  height?: number | string;
  width?: number | string;
  /** Decoder only: a value to decode instead of declaring the `latents` input (training graphs). */
  latents?: Value;
}

/** The VAE's single-head spatial self-attention with its own group norm and a residual. */
function vaeAttention(ctx: ModelContext, x: Value, channels: number, groups: number): Value {
  const g = ctx.g;
  const normed = ctx.groupNorm("group_norm", x, groups, channels, EPS);
  const seq = ops.toSequence(g, normed, channels);
  const out = attentionBlock(ctx, seq, null, channels, channels, 1, channels, true);
  return g.op("Add", [ops.fromSequence(g, out, x), x]);
}

function midBlock(ctx: ModelContext, x: Value, c: number, cfg: VaeConfig): Value {
  const o = { groups: cfg.norm_num_groups, eps: EPS };
  return ctx.scope("mid_block", () => {
    let h = ctx.scope("resnets", () => ctx.scope(0, () => resnetBlock2D(ctx, x, c, c, o)));
    if (cfg.mid_block_add_attention) {
      h = ctx.scope("attentions", () => ctx.scope(0, () => vaeAttention(ctx, h, c, cfg.norm_num_groups)));
    }
    return ctx.scope("resnets", () => ctx.scope(1, () => resnetBlock2D(ctx, h, c, c, o)));
  });
}

/** Encoder graph: input `image` [B, 3, H, W] -> outputs `latent_mean`, `latent_logvar` [B, L, H/f, W/f]. */
export function buildVaeEncoder(ctx: ModelContext, cfg: VaeConfig, io: VaeDims = {}) {
  const g = ctx.g;
  const B = io.batch ?? "batch";
  const boc = cfg.block_out_channels;
  const L = cfg.latent_channels;
  const o = { groups: cfg.norm_num_groups, eps: EPS };
  let x: Value = g.input("image", "float32", [
    B,
    cfg.in_channels,
    io.height ?? "height",
    io.width ?? "width",
  ]);
  const moments = ctx.scope("encoder", () => {
    x = ctx.conv("conv_in", x, cfg.in_channels, boc[0], 3);
    let outC = boc[0];
    boc.forEach((c, i) => {
      const inC = outC;
      outC = c;
      ctx.scope("down_blocks", () =>
        ctx.scope(i, () => {
          for (let j = 0; j < cfg.layers_per_block; j++) {
            x = ctx.scope("resnets", () =>
              ctx.scope(j, () => resnetBlock2D(ctx, x, j === 0 ? inC : outC, outC, o)));
          }
          if (i !== boc.length - 1) {
            // diffusers pads right and bottom by one, then convolves with stride 2 and no padding.
            x = ctx.scope("downsamplers", () =>
              ctx.scope(0, () =>
                ctx.conv("conv", x, outC, outC, 3, { stride: 2, padding: [0, 0, 1, 1] })));
          }
        }));
    });
    x = midBlock(ctx, x, outC, cfg);
    x = ops.silu(g, ctx.groupNorm("conv_norm_out", x, cfg.norm_num_groups, outC, EPS));
    return ctx.conv("conv_out", x, outC, 2 * L, 3);
  });
  const m = cfg.use_quant_conv ? ctx.conv("quant_conv", moments, 2 * L, 2 * L, 1) : moments;
  const [mean, logvar] = ops.chunk(g, m, 2, 1);
  const clipped = g.op("Clip", [logvar, g.scalar(-30), g.scalar(20)]);
  g.output(mean, "latent_mean");
  g.output(clipped, "latent_logvar");
  return { mean, logvar: clipped };
}

/** Decoder graph: input `latents` [B, L, h, w] (unscaled) -> output `decoded` [B, 3, h*f, w*f] in about [-1, 1]. */
export function buildVaeDecoder(ctx: ModelContext, cfg: VaeConfig, io: VaeDims = {}) {
  const g = ctx.g;
  const B = io.batch ?? "batch";
  const boc = cfg.block_out_channels;
  const L = cfg.latent_channels;
  const o = { groups: cfg.norm_num_groups, eps: EPS };
  let x: Value = io.latents ??
    g.input("latents", "float32", [B, L, io.height ?? "height", io.width ?? "width"]);
  if (cfg.use_post_quant_conv) x = ctx.conv("post_quant_conv", x, L, L, 1);
  const out = ctx.scope("decoder", () => {
    const rev = [...boc].reverse();
    x = ctx.conv("conv_in", x, L, rev[0], 3);
    x = midBlock(ctx, x, rev[0], cfg);
    let outC = rev[0];
    rev.forEach((c, i) => {
      const prevC = outC;
      outC = c;
      ctx.scope("up_blocks", () =>
        ctx.scope(i, () => {
          for (let j = 0; j <= cfg.layers_per_block; j++) {
            x = ctx.scope("resnets", () =>
              ctx.scope(j, () => resnetBlock2D(ctx, x, j === 0 ? prevC : outC, outC, o)));
          }
          if (i !== rev.length - 1) {
            x = ctx.scope("upsamplers", () =>
              ctx.scope(0, () =>
                ctx.conv("conv", ops.upsampleNearest2x(g, x), outC, outC, 3)));
          }
        }));
    });
    x = ops.silu(g, ctx.groupNorm("conv_norm_out", x, cfg.norm_num_groups, outC, EPS));
    return ctx.conv("conv_out", x, outC, cfg.out_channels, 3);
  });
  g.output(out, "decoded");
  return out;
}
