/**
 * Neural-network layers as compositions of standard ONNX ops (opset 17, default domain only), the vocabulary
 * the architectures are written in. Each is checked against a plain-TypeScript reference in `ops_test.ts`.
 *
 * Layouts follow PyTorch: images NCHW, conv weights [out, in, kh, kw], linear weights [out, in].
 */
import type { GraphBuilder, Value } from "./builder.ts";

/** y = x W^T + b, for x [..., in] and W [out, in] (PyTorch's nn.Linear). */
export function linear(g: GraphBuilder, x: Value, weight: Value, bias?: Value | null): Value {
  const wt = g.op("Transpose", [weight], { perm: [1, 0] });
  const y = g.op("MatMul", [x, wt]);
  return bias ? g.op("Add", [y, bias]) : y;
}

export interface Conv2dOptions {
  stride?: number;
  /** Symmetric padding, or [top, left, bottom, right]. */
  padding?: number | [number, number, number, number];
  groups?: number;
}

/** 2-D convolution, NCHW, weight [out, in/groups, kh, kw]. */
export function conv2d(
  g: GraphBuilder,
  x: Value,
  weight: Value,
  bias: Value | null,
  o: Conv2dOptions = {},
): Value {
  const s = o.stride ?? 1;
  const p = o.padding ?? 0;
  const pads = typeof p === "number" ? [p, p, p, p] : [p[0], p[1], p[2], p[3]];
  return g.op("Conv", bias ? [x, weight, bias] : [x, weight], {
    strides: [s, s],
    pads,
    group: o.groups ?? 1,
  });
}

/**
 * GroupNorm over NCHW (or any NC...) with per-channel affine, as torch.nn.GroupNorm: reshape to [N, G, -1],
 * InstanceNormalization with unit scale, scale and shift per channel as [N, C, -1], reshape back.
 */
export function groupNorm(
  g: GraphBuilder,
  x: Value,
  gamma: Value,
  beta: Value,
  groups: number,
  channels: number,
  eps: number,
): Value {
  const shape = g.op("Shape", [x]);
  const grouped = g.op("Reshape", [x, g.ints([0, groups, -1])]);
  const ones = g.constant(new Float32Array(groups).fill(1), [groups]);
  const zeros = g.constant(new Float32Array(groups), [groups]);
  const normed = g.op("InstanceNormalization", [grouped, ones, zeros], { epsilon: { float: eps } });
  // The affine runs on [N, C, -1] with [C, 1] parameters, so it broadcasts right for every input rank.
  const perChannel = g.op("Reshape", [normed, g.ints([0, channels, -1])]);
  const gshape = g.ints([channels, 1]);
  const scale = g.op("Reshape", [gamma, gshape]);
  const shift = g.op("Reshape", [beta, gshape]);
  return g.op("Reshape", [g.op("Add", [g.op("Mul", [perChannel, scale]), shift]), shape]);
}

/** LayerNorm over the last axis (torch.nn.LayerNorm(dim)). */
export function layerNorm(g: GraphBuilder, x: Value, gamma: Value, beta: Value, eps: number): Value {
  return g.op("LayerNormalization", [x, gamma, beta], { axis: -1, epsilon: { float: eps } });
}

export function silu(g: GraphBuilder, x: Value): Value {
  return g.op("Mul", [x, g.op("Sigmoid", [x])]);
}

/** Exact GELU: 0.5 x (1 + erf(x / sqrt 2)). */
export function gelu(g: GraphBuilder, x: Value): Value {
  const e = g.op("Erf", [g.op("Mul", [x, g.scalar(Math.SQRT1_2)])]);
  return g.op("Mul", [g.op("Mul", [x, g.scalar(0.5)]), g.op("Add", [e, g.scalar(1)])]);
}

/** CLIP's quick_gelu: x sigmoid(1.702 x). */
export function quickGelu(g: GraphBuilder, x: Value): Value {
  return g.op("Mul", [x, g.op("Sigmoid", [g.op("Mul", [x, g.scalar(1.702)])])]);
}

/** Nearest-neighbour 2x upsampling of NCHW (torch's F.interpolate(scale_factor=2, mode="nearest")). */
export function upsampleNearest2x(g: GraphBuilder, x: Value): Value {
  return g.op("Resize", [x, null, g.constant([1, 1, 2, 2], [4])], {
    mode: "nearest",
    coordinate_transformation_mode: "asymmetric",
    nearest_mode: "floor",
  });
}

/** Splits x along `axis` into `n` equal parts. */
export function chunk(g: GraphBuilder, x: Value, n: number, axis: number): Value[] {
  return g.opN("Split", [x], { axis }, n);
}

/**
 * Multi-head scaled dot-product attention. q [B, Lq, H*D], k and v [B, Lk, H*D] -> [B, Lq, H*D].
 * `mask` (added to the logits, broadcastable to [B, H, Lq, Lk]) carries causal or padding masks.
 */
export function attention(
  g: GraphBuilder,
  q: Value,
  k: Value,
  v: Value,
  heads: number,
  headDim: number,
  mask?: Value,
): Value {
  const split = g.ints([0, 0, heads, headDim]);
  const qh = g.op("Transpose", [g.op("Reshape", [q, split])], { perm: [0, 2, 1, 3] });
  const kh = g.op("Transpose", [g.op("Reshape", [k, split])], { perm: [0, 2, 3, 1] });
  const vh = g.op("Transpose", [g.op("Reshape", [v, split])], { perm: [0, 2, 1, 3] });
  let logits = g.op("Mul", [g.op("MatMul", [qh, kh]), g.scalar(1 / Math.sqrt(headDim))]);
  if (mask) logits = g.op("Add", [logits, mask]);
  const probs = g.op("Softmax", [logits], { axis: -1 });
  const out = g.op("MatMul", [probs, vh]);
  return g.op("Reshape", [g.op("Transpose", [out], { perm: [0, 2, 1, 3] }), g.ints([0, 0, heads * headDim])]);
}

/** NCHW -> [N, H*W, C] (a sequence of pixels). */
export function toSequence(g: GraphBuilder, x: Value, channels: number): Value {
  const flat = g.op("Reshape", [x, g.ints([0, channels, -1])]);
  return g.op("Transpose", [flat], { perm: [0, 2, 1] });
}

/**
 * [N, H*W, C] -> NCHW, taking H and W from `like` (an NCHW value with the target spatial size; its channel
 * count may differ from C).
 */
export function fromSequence(g: GraphBuilder, seq: Value, like: Value): Value {
  const t = g.op("Transpose", [seq], { perm: [0, 2, 1] });
  const hw = g.op("Shape", [like], { start: 2 });
  return g.op("Reshape", [t, g.op("Concat", [g.ints([0, -1]), hw], { axis: 0 })]);
}
