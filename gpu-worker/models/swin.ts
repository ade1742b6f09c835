/**
 * The Swin Transformer backbone of SeeCoder (Prompt-Free Diffusion's `lib/model_zoo/swin.py`, the
 * detection-style Swin): patch embedding, stages of (shifted-)window attention blocks with relative position
 * bias, patch merging between stages, and a layer norm on each stage's output. Parameter names are the
 * module paths of that code (`patch_embed.proj.weight`, `layers.2.blocks.17.attn.qkv.weight`,
 * `layers.0.downsample.reduction.weight`, `norm3.bias`, ...), under whatever scope the caller opens.
 *
 * Inputs of any size work as in the official code, which pads inside the network rather than the image:
 * the patch embedding pads right/bottom to the patch size, every block pads its (normalized) tokens with zeros
 * to the window multiple and crops back after attention (the padded tokens take part in the attention, so
 * padding the image up front would compute something else), and patch merging pads odd sizes by one. With
 * a symbolic image size all of that, and the shifted windows' masks, is computed in the graph from the input's
 * shape, so one graph serves every image size; with a size fixed at build time it folds to constants and every
 * shape is static (what the autodiff needs to train through the graph).
 *
 * @example
 * ```ts
 * const feats = buildSwin(ctx, parseSwinConfig({}), image); // 4 stages, NCHW, 1/4 .. 1/32 of the image
 * ```
 */
import type { GraphBuilder, Value } from "../graph/builder.ts";
import * as ops from "../graph/ops.ts";
import type { ModelContext } from "./layers.ts";

/** Swin hyper-parameters, named as the official constructor's arguments. */
export interface SwinConfig {
  embed_dim: number;
  depths: number[];
  num_heads: number[];
  window_size: number;
  patch_size: number;
  in_chans: number;
  mlp_ratio: number;
  qkv_bias: boolean;
  /** Overrides head_dim^-0.5 when set. */
  qk_scale: number | null;
  patch_norm: boolean;
  /** Stages whose output gets a `norm{i}` layer (and is returned). */
  out_indices: number[];
}

/**
 * Reads Swin arguments; defaults are SeeCoder's `swin_large` (embed 192, depths 2/2/18/2, heads 6/12/24/48,
 * window 12) and the official constructor's defaults for the rest. `ape` (absolute position embedding) and
 * dropout / drop-path rates are accepted; the former must be false, the latter do nothing at inference.
 */
export function parseSwinConfig(raw: Record<string, unknown>): SwinConfig {
  const get = <T>(k: string, d: T): T => (raw[k] ?? d) as T;
  if (get("ape", false)) {
    throw new RangeError("Swin with an absolute position embedding (ape) is not supported");
  }
  const cfg: SwinConfig = {
    embed_dim: get("embed_dim", 192),
    depths: get("depths", [2, 2, 18, 2]),
    num_heads: get("num_heads", [6, 12, 24, 48]),
    window_size: get("window_size", 12),
    patch_size: get("patch_size", 4),
    in_chans: get("in_chans", 3),
    mlp_ratio: get("mlp_ratio", 4),
    qkv_bias: get("qkv_bias", true),
    qk_scale: get<number | null>("qk_scale", null),
    patch_norm: get("patch_norm", true),
    out_indices: get("out_indices", [0, 1, 2, 3]),
  };
  if (cfg.depths.length !== cfg.num_heads.length) {
    throw new RangeError(`Swin depths (${cfg.depths.length}) and num_heads (${cfg.num_heads.length}) differ`);
  }
  cfg.num_heads.forEach((h, i) => {
    if ((cfg.embed_dim * 2 ** i) % h !== 0) {
      throw new RangeError(`Swin stage ${i}: dim ${cfg.embed_dim * 2 ** i} is not divisible by ${h} heads`);
    }
  });
  return cfg;
}

/** A size: a number when known while building, else an int64 [1] value the graph computes. */
export type Size = number | Value;

/** One stage's output: NCHW, with its spatial size. */
export interface FeatureMap {
  value: Value;
  channels: number;
  height: Size;
  width: Size;
}

const LN_EPS = 1e-5;

/**
 * Shape arithmetic on sizes: folded to numbers when the operands are known (static shapes, which the autodiff
 * needs), emitted as int64 ops when not (one graph for every image size).
 */
export class Dims {
  constructor(readonly g: GraphBuilder) {}
  /** The size of `x` along `axis`, a number when shape inference knows it. */
  of(x: Value, axis: number): Size {
    const known = this.g.shapeOf(x)?.[axis];
    return typeof known === "number" ? known : this.g.op("Shape", [x], { start: axis, end: axis + 1 });
  }
  value(a: Size): Value {
    return typeof a === "number" ? this.g.ints([a]) : a;
  }
  op(type: "Add" | "Sub" | "Mul" | "Div" | "Mod" | "Min", a: Size, b: Size): Size {
    if (typeof a === "number" && typeof b === "number") {
      switch (type) {
        case "Add":
          return a + b;
        case "Sub":
          return a - b;
        case "Mul":
          return a * b;
        case "Div":
          return Math.floor(a / b);
        case "Mod":
          return a % b;
        case "Min":
          return Math.min(a, b);
      }
    }
    return this.g.op(type, [this.value(a), this.value(b)]);
  }
  /** (m - n % m) % m: what pads n to a multiple of m. */
  padTo(n: Size, m: number): Size {
    return this.op("Mod", this.op("Sub", m, this.op("Mod", n, m)), m);
  }
  /** A shape (or pads) vector: sizes (one entry each) and literal lists. */
  cat(...parts: (Size | number[])[]): Value {
    if (parts.every((p) => typeof p === "number" || Array.isArray(p))) {
      return this.g.ints(parts.flatMap((p) => (Array.isArray(p) ? p : [p as number])));
    }
    const vals = parts.map((p) => (Array.isArray(p) ? this.g.ints(p) : this.value(p)));
    return this.g.op("Concat", vals, { axis: 0 });
  }
  /** Zero-pads `x` at the end of each axis by `ends` (nothing when all are known zeros). */
  padEnd(x: Value, ends: Size[]): Value {
    if (ends.every((e) => e === 0)) return x;
    const pads = this.cat(Array(ends.length).fill(0), ...ends);
    return this.g.op("Pad", [x, pads], { mode: "constant" });
  }
}

/**
 * Builds the backbone on `image` [B, in_chans, H, W]. Returns the normed output of every stage in
 * `out_indices` that `use` asks for (default: all), keyed by stage index. The norms of stages not used are
 * still requested from the weight source (the checkpoint holds them), but build nothing.
 */
export function buildSwin(
  ctx: ModelContext,
  cfg: SwinConfig,
  image: Value,
  use: number[] = cfg.out_indices,
): Map<number, FeatureMap> {
  const g = ctx.g;
  const d = new Dims(g);
  const p = cfg.patch_size;
  const C0 = cfg.embed_dim;
  // Patch embedding: pad right/bottom to the patch size, strided conv, layer norm over channels.
  const patches = ctx.scope("patch_embed", () => {
    const padded = d.padEnd(image, [0, 0, d.padTo(d.of(image, 2), p), d.padTo(d.of(image, 3), p)]);
    return ctx.conv("proj", padded, cfg.in_chans, C0, p, { stride: p, padding: 0 });
  });
  let H = d.of(patches, 2), W = d.of(patches, 3);
  let x = ops.toSequence(g, patches, C0);
  if (cfg.patch_norm) x = ctx.scope("patch_embed", () => ctx.layerNorm("norm", x, C0, LN_EPS));

  const outs = new Map<number, FeatureMap>();
  for (let i = 0; i < cfg.depths.length; i++) {
    const dim = C0 * 2 ** i;
    const last = i === cfg.depths.length - 1;
    const [stageOut, h, w] = ctx.scope("layers", () =>
      ctx.scope(i, () => {
        const st = stageWindows(d, cfg.window_size, H, W);
        ctx.scope("blocks", () => {
          for (let b = 0; b < cfg.depths[i]; b++) {
            x = ctx.scope(b, () => swinBlock(ctx, cfg, x, dim, cfg.num_heads[i], st, b % 2 === 1));
          }
        });
        const out: [Value, Size, Size] = [x, H, W];
        if (!last) {
          x = ctx.scope("downsample", () => patchMerging(ctx, d, x, H, W, dim));
          H = d.op("Div", d.op("Add", H, 1), 2);
          W = d.op("Div", d.op("Add", W, 1), 2);
        }
        return out;
      }));
    if (!cfg.out_indices.includes(i)) continue;
    if (!use.includes(i)) {
      ctx.scope(`norm${i}`, () => {
        ctx.weights.get(g.path("weight"), [dim], "ones");
        ctx.weights.get(g.path("bias"), [dim], "zeros");
      });
      continue;
    }
    const normed = ctx.layerNorm(`norm${i}`, stageOut, dim, LN_EPS);
    const nchw = g.op("Transpose", [g.op("Reshape", [normed, d.cat([0], h, w, [dim])])], {
      perm: [0, 3, 1, 2],
    });
    outs.set(i, { value: nchw, channels: dim, height: h, width: w });
  }
  return outs;
}

/** What every block of a stage shares: sizes, window counts and the shift mask. */
interface StageWindows {
  ws: number;
  H: Size;
  W: Size;
  /** What pads the rows and columns to the window multiple. */
  padB: Size;
  padR: Size;
  Hp: Size;
  Wp: Size;
  nh: Size;
  nw: Size;
  /** [nW, 1, N, N]: 0 within a region of the shifted map, -100 across (the official mask, padded size). */
  mask: Value;
  /** [N * N] indices into the bias table. */
  relIndex: number[];
}

function stageWindows(d: Dims, ws: number, H: Size, W: Size): StageWindows {
  const padB = d.padTo(H, ws), padR = d.padTo(W, ws);
  const Hp = d.op("Add", H, padB), Wp = d.op("Add", W, padR);
  const nh = d.op("Div", Hp, ws), nw = d.op("Div", Wp, ws);
  const mask = typeof Hp === "number" && typeof Wp === "number"
    ? d.g.constant(shiftMask(ws, Hp, Wp), [(Hp / ws) * (Wp / ws), 1, ws * ws, ws * ws])
    : shiftMaskGraph(d, ws, Hp, Wp, nh, nw);
  const relIndex: number[] = [];
  for (let i = 0; i < ws * ws; i++) {
    for (let j = 0; j < ws * ws; j++) {
      const dh = Math.floor(i / ws) - Math.floor(j / ws) + ws - 1;
      const dw = (i % ws) - (j % ws) + ws - 1;
      relIndex.push(dh * (2 * ws - 1) + dw);
    }
  }
  return { ws, H, W, padB, padR, Hp, Wp, nh, nw, mask, relIndex };
}

/** Region label along one padded axis of size P: 0 on [0, P - ws), 1 on [P - ws, P - shift), 2 after. */
function region(i: number, P: number, ws: number): number {
  return i < P - ws ? 0 : i < P - (ws >> 1) ? 1 : 2;
}

/** The shifted-window mask of a known padded size, [nW * N * N]. */
function shiftMask(ws: number, Hp: number, Wp: number): Float32Array {
  const N = ws * ws, nh = Hp / ws, nw = Wp / ws;
  const mask = new Float32Array(nh * nw * N * N);
  for (let r = 0; r < nh; r++) {
    for (let c = 0; c < nw; c++) {
      const labels: number[] = [];
      for (let a = 0; a < ws; a++) {
        for (let b = 0; b < ws; b++) labels.push(region(r * ws + a, Hp, ws) * 3 + region(c * ws + b, Wp, ws));
      }
      const base = (r * nw + c) * N * N;
      for (let i = 0; i < N; i++) {
        for (let j = 0; j < N; j++) if (labels[i] !== labels[j]) mask[base + i * N + j] = -100;
      }
    }
  }
  return mask;
}

/** The same mask computed by the graph, for a padded size known only at run time. */
function shiftMaskGraph(d: Dims, ws: number, Hp: Size, Wp: Size, nh: Size, nw: Size): Value {
  const g = d.g;
  const N = ws * ws;
  const labels = (P: Size) => {
    const limit = g.op("Squeeze", [d.value(P), g.ints([0])]);
    const idx = g.op("Range", [g.constant([0], [], "int64"), limit, g.constant([1], [], "int64")]);
    const from = (k: number) =>
      g.op("Cast", [g.op("GreaterOrEqual", [idx, d.value(d.op("Sub", P, k))])], { to: 1 });
    return g.op("Add", [from(ws), from(ws >> 1)]);
  };
  const label = g.op("Add", [
    g.op("Mul", [g.op("Unsqueeze", [labels(Hp), g.ints([1])]), g.scalar(3)]),
    g.op("Unsqueeze", [labels(Wp), g.ints([0])]),
  ]); // [Hp, Wp]
  const perWindow = g.op("Reshape", [
    g.op("Transpose", [g.op("Reshape", [label, d.cat(nh, [ws], nw, [ws])])], { perm: [0, 2, 1, 3] }),
    g.ints([-1, N]),
  ]); // [nW, N]
  const diff = g.op("Sub", [
    g.op("Unsqueeze", [perWindow, g.ints([1])]),
    g.op("Unsqueeze", [perWindow, g.ints([2])]),
  ]);
  return g.op("Unsqueeze", [
    g.op("Where", [g.op("Equal", [diff, g.scalar(0)]), g.scalar(0), g.scalar(-100)]),
    g.ints([1]),
  ]);
}

/** torch.roll of x by a static `by` along `axis` (any size). */
function roll(ctx: ModelContext, x: Value, by: number, axis: number): Value {
  const g = ctx.g;
  const cut = -by; // roll(x, by) = cat(x[-by:], x[:-by])
  const head = g.op("Slice", [x, g.ints([cut]), g.ints([Number.MAX_SAFE_INTEGER]), g.ints([axis])]);
  const tail = g.op("Slice", [x, g.ints([0]), g.ints([cut]), g.ints([axis])]);
  return g.op("Concat", [head, tail], { axis });
}

/** Pre-norm block: (shifted) window attention and an MLP, each with a residual. x [B, H*W, C]. */
function swinBlock(
  ctx: ModelContext,
  cfg: SwinConfig,
  x: Value,
  dim: number,
  heads: number,
  st: StageWindows,
  shifted: boolean,
): Value {
  const g = ctx.g;
  const d = new Dims(g);
  const ws = st.ws;
  const shift = shifted ? ws >> 1 : 0;
  let h = g.op("Reshape", [ctx.layerNorm("norm1", x, dim, LN_EPS), d.cat([0], st.H, st.W, [dim])]);
  h = d.padEnd(h, [0, st.padB, st.padR, 0]);
  if (shift) h = roll(ctx, roll(ctx, h, -shift, 1), -shift, 2);
  // Windows: [B, Hp/ws, ws, Wp/ws, ws, C] -> [B * nW, ws * ws, C].
  const win = g.op("Reshape", [
    g.op("Transpose", [g.op("Reshape", [h, d.cat([0], st.nh, [ws], st.nw, [ws, dim])])], {
      perm: [0, 1, 3, 2, 4, 5],
    }),
    g.ints([-1, ws * ws, dim]),
  ]);
  const attn = ctx.scope("attn", () => windowAttention(ctx, cfg, win, dim, heads, st, shift > 0));
  h = g.op("Reshape", [
    g.op("Transpose", [g.op("Reshape", [attn, d.cat([-1], st.nh, st.nw, [ws, ws, dim])])], {
      perm: [0, 1, 3, 2, 4, 5],
    }),
    d.cat([-1], st.Hp, st.Wp, [dim]),
  ]);
  if (shift) h = roll(ctx, roll(ctx, h, shift, 1), shift, 2);
  if (st.padB !== 0 || st.padR !== 0) {
    h = g.op("Slice", [h, g.ints([0, 0]), d.cat(st.H, st.W), g.ints([1, 2])]);
  }
  const r = g.op("Add", [x, g.op("Reshape", [h, g.ints([0, -1, dim])])]);
  const n2 = ctx.layerNorm("norm2", r, dim, LN_EPS);
  const mlp = ctx.scope("mlp", () => {
    const hidden = Math.floor(dim * cfg.mlp_ratio);
    return ctx.linear("fc2", ops.gelu(g, ctx.linear("fc1", n2, dim, hidden)), hidden, dim);
  });
  return g.op("Add", [r, mlp]);
}

/** Multi-head attention inside each window, with the learned relative position bias (and the shift mask). */
function windowAttention(
  ctx: ModelContext,
  cfg: SwinConfig,
  x: Value,
  dim: number,
  heads: number,
  st: StageWindows,
  masked: boolean,
): Value {
  const g = ctx.g;
  const d = new Dims(g);
  const ws = st.ws, N = ws * ws, hd = dim / heads;
  const table = ctx.param("relative_position_bias_table", [(2 * ws - 1) ** 2, heads], "embedding");
  const qkv = ctx.linear("qkv", x, dim, 3 * dim, cfg.qkv_bias);
  const [q, k, v] = ops.chunk(g, qkv, 3, -1).map((t) =>
    g.op("Transpose", [g.op("Reshape", [t, g.ints([0, 0, heads, hd])])], { perm: [0, 2, 1, 3] })
  );
  const scale = cfg.qk_scale ?? hd ** -0.5;
  let logits = g.op("MatMul", [
    g.op("Mul", [q, g.scalar(scale)]),
    g.op("Transpose", [k], { perm: [0, 1, 3, 2] }),
  ]);
  const bias = g.op("Transpose", [
    g.op("Reshape", [g.op("Gather", [table, g.ints(st.relIndex)], { axis: 0 }), g.ints([N, N, heads])]),
  ], { perm: [2, 0, 1] });
  logits = g.op("Add", [logits, bias]);
  if (masked) {
    const nW = d.op("Mul", st.nh, st.nw);
    logits = g.op("Reshape", [
      g.op("Add", [g.op("Reshape", [logits, d.cat([-1], nW, [heads, N, N])]), st.mask]),
      g.ints([-1, heads, N, N]),
    ]);
  }
  const out = g.op("MatMul", [g.op("Softmax", [logits], { axis: -1 }), v]);
  const merged = g.op("Reshape", [g.op("Transpose", [out], { perm: [0, 2, 1, 3] }), g.ints([0, 0, dim])]);
  return ctx.linear("proj", merged, dim, dim);
}

/** 2x2 neighbourhoods concatenated (in the official order x00, x10, x01, x11), layer norm, linear 4C -> 2C. */
function patchMerging(ctx: ModelContext, d: Dims, x: Value, H: Size, W: Size, dim: number): Value {
  const g = ctx.g;
  let h = g.op("Reshape", [x, d.cat([0], H, W, [dim])]);
  h = d.padEnd(h, [0, d.op("Mod", H, 2), d.op("Mod", W, 2), 0]);
  const H2 = d.op("Div", d.op("Add", H, 1), 2), W2 = d.op("Div", d.op("Add", W, 1), 2);
  // [B, H2, dh, W2, dw, C] -> [B, H2, W2, dw, dh, C]: channel block k = dh + 2 dw.
  const merged = g.op("Reshape", [
    g.op("Transpose", [g.op("Reshape", [h, d.cat([0], H2, [2], W2, [2, dim])])], {
      perm: [0, 1, 3, 4, 2, 5],
    }),
    g.ints([0, -1, 4 * dim]),
  ]);
  return ctx.linear("reduction", ctx.layerNorm("norm", merged, 4 * dim, LN_EPS), 4 * dim, 2 * dim, false);
}
