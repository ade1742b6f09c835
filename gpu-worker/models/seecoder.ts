/**
 * SeeCoder, the image encoder of Prompt-Free Diffusion (SHI-Labs/Prompt-Free-Diffusion,
 * `lib/model_zoo/seecoder.py`), as an ONNX graph: a Swin-L backbone (`swin.ts`), a decoder that brings the
 * res3/res4/res5 maps to one width and runs self-attention over all of them, and a query transformer whose
 * 4 global + 144 local learned queries read the maps; the result, [B, 148, 768], takes the text embeddings'
 * place in an SD 1.x UNet's cross-attention. Input `image` float32 [B, 3, H, W]: raw RGB in [0, 1] at its own
 * size (no resize, no normalization: what `ToTensor()` gives the official app); the backbone pads inside
 * itself as the official code does. Output `embeddings`. The `-PA` variant (`with_fea2d_pos`) adds a 2-D sin-cos
 * position embedding through an MLP to the maps' keys.
 *
 * Parameter names are the official checkpoints' (seecoder-v1-0, seecoder-pa-v1-0, seecoder-anime-v1-0
 * safetensors; the anime one has the plain architecture, as the app builds it), so those files load by name. How they follow from the official code: the app's model (`pfd`)
 * keeps its context encoders in `self.ctx = nn.ModuleDict()` under the key `image`, and `load_ctx` loads the
 * file into the whole model with `strict=True`, after adding only the keys that do not start with `ctx.`; so the
 * file holds exactly the `ctx.image.` part of the model's state dict. Below that prefix come the attributes of
 * `SemanticContextEncoder` (`imencoder`, `imdecoder`, `qtransformer`) and then the module paths of each:
 * - `ctx.image.imencoder.layers.2.blocks.17.attn.qkv.weight` [2304, 768], `....attn.relative_position_bias_table`
 *   [529, 24], `ctx.image.imencoder.norm3.weight` (SwinTransformer; `norm0` too, though SeeCoder never uses res2);
 * - `ctx.image.imdecoder.inproj_layers.res5.0.weight` [768, 1536, 1, 1] (Conv2d) and `.1.weight` (GroupNorm),
 *   `ctx.image.imdecoder.transformer.layers.5.self_attn.in_proj_weight` [2304, 768] (nn.MultiheadAttention),
 *   `ctx.image.imdecoder.lateral_layers.res3.weight` (bias-free conv) and `.norm.weight`,
 *   `ctx.image.imdecoder.level_embed` [3, 768];
 * - `ctx.image.qtransformer.init_query.weight` [148, 768], `query_pos_embedding.weight`, `level_embed.weight`,
 *   `transformer_crossatt_layers.8.multihead_attn.in_proj_weight`, `transformer_selfatt_layers.8.self_attn.*`,
 *   `transformer_feedforward_layers.8.linear1.weight`, and for the PA variant `pe_layer.mlp.{0,2,4}.*`
 *   (an nn.Sequential of Linear, SiLU, Linear, SiLU, Linear).
 * The state dict also holds one int64 buffer per Swin block, `...attn.relative_position_index`: a function of
 * the window size that the graph computes itself, so it is never read (`isSeeCoderBuffer`). A third-party
 * loader (the ComfyUI SeeCoder node) strips the same `ctx.image.` prefix, and tells PA files by
 * `qtransformer.pe_layer` keys, which `seecoderVariant` does too.
 *
 * One official quirk is kept behind an option: the decoder's `nn.MultiheadAttention` (batch_first=False) gets
 * [B, L, D] tensors, so it attends across the batch axis, token by token. The official app encodes one image at
 * a time, where that attention is over a single element and reduces to out_proj(v_proj(x)). The default here
 * (`decoderAttention: "per_image"`) computes exactly that for every image of a batch, so images never mix;
 * `"across_batch"` reproduces the official batched computation.
 *
 * @example
 * ```ts
 * const g = new GraphBuilder("seecoder");
 * const src = WeightSource.fromFiles([await loadSafetensors("seecoder-pa-v1-0.safetensors")]);
 * const cfg = parseSeeCoderConfig({ qtransformer: { with_fea2d_pos: true } });
 * buildSeeCoder(new ModelContext(g, src), cfg, {}); // image [B, 3, H, W] (any H, W) -> embeddings [B, 148, 768]
 * ```
 */
import type { GraphBuilder, Value } from "../graph/builder.ts";
import * as ops from "../graph/ops.ts";
import type { ModelContext } from "./layers.ts";
import { buildSwin, Dims, type FeatureMap, parseSwinConfig, type Size, type SwinConfig } from "./swin.ts";

/** Where the official checkpoints put SeeCoder (pfd's `ctx` ModuleDict, key `image`); the default name prefix. */
export const SEECODER_PREFIX = "ctx.image.";
/** The graph's input and output names. */
export const SEECODER_INPUT = "image";
export const SEECODER_OUTPUT = "embeddings";

/** The decoder (`seecoder_decoder` in configs/model/seecoder.yaml). */
export interface SeeCoderDecoderConfig {
  /** Channels of the backbone maps, by tag (res3, res4, res5). */
  inchannels: Record<string, number>;
  trans_input_tags: string[];
  trans_dim: number;
  trans_nheads: number;
  trans_feedforward_dim: number;
  trans_num_layers: number;
}

/** The query transformer (`seecoder_query_transformer[_position_aware]`). */
export interface SeeCoderQueryConfig {
  in_channels: number;
  hidden_dim: number;
  /** [global, local]. */
  num_queries: [number, number];
  nheads: number;
  num_layers: number;
  feedforward_dim: number;
  num_feature_levels: number;
  /** A 1x1 conv per level (`input_proj.{i}`) even when in_channels == hidden_dim; implied when they differ. */
  enforce_input_project: boolean;
  /** The PA variant: a 2-D sin-cos position embedding (20 frequencies) through a 3-layer MLP. */
  with_fea2d_pos: boolean;
}

export interface SeeCoderConfig {
  imencoder: SwinConfig;
  imdecoder: SeeCoderDecoderConfig;
  qtransformer: SeeCoderQueryConfig;
}

/** Backbone stage of each pyramid tag (the Swin returns res2..res5 for stages 0..3). */
const TAG_STAGE: Record<string, number> = { res2: 0, res3: 1, res4: 2, res5: 3 };
const LN_EPS = 1e-5;
const GN_GROUPS = 32;
/** PPE_MLP's frequency count (fixed in the official code). */
const PE_FREQS = 20;

/**
 * Reads a SeeCoder config: `{ imencoder, imdecoder, qtransformer }`, each with the official argument names
 * (swin.yaml / seecoder.yaml). Missing values take the official `seecoder` configuration (Swin-L; decoder
 * 768 wide, 8 heads, ffn 1024, 6 layers; 4 + 144 queries, 9 layers, 8 heads, ffn 2048); set
 * `qtransformer.with_fea2d_pos` for SeeCoder-PA. Dropout rates are accepted and ignored (inference).
 */
export function parseSeeCoderConfig(raw: Record<string, unknown>): SeeCoderConfig {
  const part = (k: string) => (raw[k] ?? {}) as Record<string, unknown>;
  const d = part("imdecoder"), q = part("qtransformer");
  const getD = <T>(k: string, def: T): T => (d[k] ?? def) as T;
  const getQ = <T>(k: string, def: T): T => (q[k] ?? def) as T;
  const cfg: SeeCoderConfig = {
    imencoder: parseSwinConfig(part("imencoder")),
    imdecoder: {
      inchannels: getD("inchannels", { res3: 384, res4: 768, res5: 1536 }),
      trans_input_tags: getD("trans_input_tags", ["res3", "res4", "res5"]),
      trans_dim: getD("trans_dim", 768),
      trans_nheads: getD("trans_nheads", 8),
      trans_feedforward_dim: getD("trans_feedforward_dim", 1024),
      trans_num_layers: getD("trans_num_layers", 6),
    },
    qtransformer: {
      in_channels: getQ("in_channels", 768),
      hidden_dim: getQ("hidden_dim", 768),
      num_queries: getQ("num_queries", [4, 144]),
      nheads: getQ("nheads", 8),
      num_layers: getQ("num_layers", 9),
      feedforward_dim: getQ("feedforward_dim", 2048),
      num_feature_levels: getQ("num_feature_levels", 3),
      enforce_input_project: getQ("enforce_input_project", false),
      with_fea2d_pos: getQ("with_fea2d_pos", false),
    },
  };
  const dec = cfg.imdecoder, qt = cfg.qtransformer;
  const tags = Object.keys(dec.inchannels);
  if (tags.some((t) => !dec.trans_input_tags.includes(t))) {
    throw new RangeError(
      "SeeCoder decoder: FPN levels (inchannels outside trans_input_tags) are not supported",
    );
  }
  for (const t of tags) {
    const stage = TAG_STAGE[t];
    if (stage === undefined) throw new RangeError(`SeeCoder decoder: unknown level "${t}"`);
    if (dec.inchannels[t] !== cfg.imencoder.embed_dim * 2 ** stage) {
      throw new RangeError(
        `SeeCoder decoder: ${t} has ${dec.inchannels[t]} channels, the backbone gives ` +
          `${cfg.imencoder.embed_dim * 2 ** stage}`,
      );
    }
  }
  if (dec.trans_dim % GN_GROUPS !== 0 || dec.trans_dim % dec.trans_nheads !== 0) {
    throw new RangeError(
      `SeeCoder decoder: trans_dim ${dec.trans_dim} must divide by 32 groups and the heads`,
    );
  }
  if (getQ("pre_norm", false)) throw new RangeError("SeeCoder query transformer: pre_norm is not supported");
  if (qt.in_channels !== dec.trans_dim || qt.num_feature_levels !== tags.length) {
    throw new RangeError(
      "SeeCoder: the query transformer must read every decoder level at the decoder's width",
    );
  }
  if (qt.hidden_dim % qt.nheads !== 0) {
    throw new RangeError(
      `SeeCoder query transformer: ${qt.hidden_dim} is not divisible by ${qt.nheads} heads`,
    );
  }
  return cfg;
}

/** "pa" when a checkpoint's tensor names include the position-embedding MLP (`qtransformer.pe_layer.*`). */
export function seecoderVariant(names: Iterable<string>): "plain" | "pa" {
  for (const n of names) if (n.includes("qtransformer.pe_layer.")) return "pa";
  return "plain";
}

/** State-dict entries of the official checkpoints that are buffers the graph computes (never read). */
export function isSeeCoderBuffer(name: string): boolean {
  return name.endsWith(".relative_position_index");
}

/** The number of embedding rows: global + local queries (148 officially). */
export function seecoderTokens(cfg: SeeCoderConfig): number {
  return cfg.qtransformer.num_queries[0] + cfg.qtransformer.num_queries[1];
}

/**
 * Builds SeeCoder. The image's batch and size are symbolic unless given: then the Swin's padding and masks
 * and the PA position features are computed from the input's shape, so one session serves every reference
 * image as it comes; numbers fold them to constants and make every shape static (for training the decoder
 * and query transformer through the autodiff, which needs static ranks). Parameters are named under `prefix` (default `ctx.image.`, as in the
 * official files; "" for a file saved from the bare module). Returns the `embeddings` output, [B, 148, 768]
 * for the official configs.
 */
export function buildSeeCoder(
  ctx: ModelContext,
  cfg: SeeCoderConfig,
  io: {
    height?: number | string;
    width?: number | string;
    batch?: number | string;
    decoderAttention?: "per_image" | "across_batch";
    prefix?: string;
  },
): Value {
  const g = ctx.g;
  const B = io.batch ?? "batch";
  const image = g.input(SEECODER_INPUT, "float32", [
    B,
    cfg.imencoder.in_chans,
    io.height ?? "height",
    io.width ?? "width",
  ]);
  const tags = [...cfg.imdecoder.trans_input_tags].sort();
  const body = () => {
    const feats = ctx.scope(
      "imencoder",
      () => buildSwin(ctx, cfg.imencoder, image, tags.map((t) => TAG_STAGE[t])),
    );
    const byTag = new Map(tags.map((t) => [t, feats.get(TAG_STAGE[t])!]));
    const attention = io.decoderAttention ?? "per_image";
    const maps = ctx.scope("imdecoder", () => buildDecoder(ctx, cfg.imdecoder, byTag, attention));
    return ctx.scope(
      "qtransformer",
      () => buildQueryTransformer(ctx, cfg.qtransformer, tags.map((t) => maps.get(t)!)),
    );
  };
  const scopes = (io.prefix ?? SEECODER_PREFIX).split(".").filter((s) => s);
  const out = scopes.reduceRight<() => Value>((inner, name) => () => ctx.scope(name, inner), body)();
  g.output(out, SEECODER_OUTPUT, [B, seecoderTokens(cfg), cfg.qtransformer.hidden_dim]);
  return out;
}

/**
 * nn.MultiheadAttention (packed `in_proj_weight` [3D, D] / `in_proj_bias`, then `out_proj`) on [B, L, D] inputs
 * with batch-first semantics. `valueOnly`: attention over one element (the official decoder at batch 1),
 * where the weights are 1 and only the value and output projections act.
 */
function multiheadAttention(
  ctx: ModelContext,
  name: string,
  q: Value,
  k: Value,
  v: Value,
  dim: number,
  heads: number,
  valueOnly = false,
): Value {
  const g = ctx.g;
  return ctx.scope(name, () => {
    const w = ctx.param("in_proj_weight", [3 * dim, dim], "fan_in");
    const b = ctx.param("in_proj_bias", [3 * dim], "zeros");
    const rows = (i: number) => g.op("Slice", [w, g.ints([i * dim]), g.ints([(i + 1) * dim]), g.ints([0])]);
    const bias = (i: number) => g.op("Slice", [b, g.ints([i * dim]), g.ints([(i + 1) * dim]), g.ints([0])]);
    const vp = ops.linear(g, v, rows(2), bias(2));
    const attn = valueOnly ? vp : ops.attention(
      g,
      ops.linear(g, q, rows(0), bias(0)),
      ops.linear(g, k, rows(1), bias(1)),
      vp,
      heads,
      dim / heads,
    );
    return ctx.linear("out_proj", attn, dim, dim);
  });
}

/** Post-norm residual FFN with ReLU: norm(x + linear2(relu(linear1(x)))). */
function feedForward(ctx: ModelContext, x: Value, dim: number, hidden: number, norm: string): Value {
  const g = ctx.g;
  const f = ctx.linear("linear2", g.op("Relu", [ctx.linear("linear1", x, dim, hidden)]), hidden, dim);
  return ctx.layerNorm(norm, g.op("Add", [x, f]), dim, LN_EPS);
}

/**
 * The decoder: per level a 1x1 conv + GroupNorm(32) to `trans_dim`, flattened (coarsest level first) with a
 * level embedding, concatenated, `trans_num_layers` post-norm self-attention layers, split back, and each
 * level's lateral (bias-free 1x1 conv + GroupNorm) of the backbone map added.
 */
function buildDecoder(
  ctx: ModelContext,
  cfg: SeeCoderDecoderConfig,
  feats: Map<string, FeatureMap>,
  attention: "per_image" | "across_batch",
): Map<string, FeatureMap> {
  const g = ctx.g;
  const D = cfg.trans_dim;
  const order = [...feats.keys()].sort().reverse(); // res5, res4, res3
  const levelEmbed = ctx.param("level_embed", [order.length, D], "embedding");
  const seqs = order.map((tag, idx) => {
    const f = feats.get(tag)!;
    const x = ctx.scope("inproj_layers", () =>
      ctx.scope(tag, () => {
        const c = ctx.conv("0", f.value, f.channels, D, 1);
        return ctx.groupNorm("1", c, GN_GROUPS, D, LN_EPS);
      }));
    const row = g.op("Gather", [levelEmbed, g.ints([idx])], { axis: 0 });
    return g.op("Add", [ops.toSequence(g, x, D), row]);
  });
  let h = seqs.length === 1 ? seqs[0] : g.op("Concat", seqs, { axis: 1 });
  ctx.scope("transformer", () =>
    ctx.scope("layers", () => {
      for (let l = 0; l < cfg.trans_num_layers; l++) {
        h = ctx.scope(l, () => {
          let a: Value;
          if (attention === "across_batch") {
            // The official call: tokens are nn.MultiheadAttention's batch, images its sequence.
            const t = g.op("Transpose", [h], { perm: [1, 0, 2] });
            a = g.op("Transpose", [multiheadAttention(ctx, "self_attn", t, t, t, D, cfg.trans_nheads)], {
              perm: [1, 0, 2],
            });
          } else {
            a = multiheadAttention(ctx, "self_attn", h, h, h, D, cfg.trans_nheads, true);
          }
          const n1 = ctx.layerNorm("norm1", g.op("Add", [h, a]), D, LN_EPS);
          return feedForward(ctx, n1, D, cfg.trans_feedforward_dim, "norm2");
        });
      }
    }));
  const out = new Map<string, FeatureMap>();
  const d = new Dims(g);
  const lengths = order.map((tag) => d.op("Mul", feats.get(tag)!.height, feats.get(tag)!.width));
  const parts = g.opN("Split", [h, d.cat(...lengths)], { axis: 1 }, order.length);
  order.forEach((tag, idx) => {
    const f = feats.get(tag)!;
    const y = g.op("Reshape", [
      g.op("Transpose", [parts[idx]], { perm: [0, 2, 1] }),
      d.cat([0, D], f.height, f.width),
    ]);
    const lateral = ctx.scope("lateral_layers", () =>
      ctx.scope(tag, () => {
        const w = ctx.param("weight", [D, f.channels, 1, 1], "fan_in");
        return ctx.groupNorm("norm", ops.conv2d(g, f.value, w, null), GN_GROUPS, D, LN_EPS);
      }));
    out.set(tag, { value: g.op("Add", [y, lateral]), channels: D, height: f.height, width: f.width });
  });
  return out;
}

/**
 * The PA position features of each pixel of an h x w map, before the MLP, as [1, h * w, 80] (row-major): sin
 * and cos of its centred row and column coordinates, in units of 2 pi / min(h, w), times 20 frequencies
 * geometric from 1 to min(h, w) / 2; order sin_h, cos_h, sin_w, cos_w. Float32 arithmetic as the official; a
 * constant when the size is known, else computed by the graph.
 */
function positionFeatures(g: GraphBuilder, h: Size, w: Size): Value {
  const f = Math.fround;
  // torch.linspace(0, 1, 20) in float32: the first half counts up from 0, the second down from 1.
  const step = f(1 / (PE_FREQS - 1));
  const t = Array.from(
    { length: PE_FREQS },
    (_, i) => (i < PE_FREQS / 2 ? f(i * step) : f(1 - f((PE_FREQS - 1 - i) * step))),
  );
  if (typeof h === "number" && typeof w === "number") {
    const minlen = Math.min(h, w);
    const freqs = t.map((x) => f((minlen / 2) ** x));
    const coord = (i: number, n: number) => f(f(f(f(i + 0.5) - n / 2) / minlen) * f(2 * Math.PI));
    const out = new Float32Array(h * w * 4 * PE_FREQS);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const base = (y * w + x) * 4 * PE_FREQS;
        for (let k = 0; k < PE_FREQS; k++) {
          const ph = f(coord(y, h) * freqs[k]), pw = f(coord(x, w) * freqs[k]);
          out[base + k] = Math.sin(ph);
          out[base + PE_FREQS + k] = Math.cos(ph);
          out[base + 2 * PE_FREQS + k] = Math.sin(pw);
          out[base + 3 * PE_FREQS + k] = Math.cos(pw);
        }
      }
    }
    return g.constant(out, [1, h * w, 4 * PE_FREQS]);
  }
  const d = new Dims(g);
  const float = (v: Size) => g.op("Cast", [d.value(v)], { to: 1 });
  const minlen = float(d.op("Min", h, w));
  const freqs = g.op("Pow", [g.op("Mul", [minlen, g.scalar(0.5)]), g.constant(t, [PE_FREQS])]); // [20]
  const axis = (n: Size) => {
    const limit = g.op("Squeeze", [d.value(n), g.ints([0])]);
    const idx = float(g.op("Range", [g.constant([0], [], "int64"), limit, g.constant([1], [], "int64")]));
    const centred = g.op("Sub", [g.op("Add", [idx, g.scalar(0.5)]), g.op("Mul", [float(n), g.scalar(0.5)])]);
    const c = g.op("Mul", [g.op("Div", [centred, minlen]), g.scalar(2 * Math.PI)]);
    const phase = g.op("Mul", [g.op("Unsqueeze", [c, g.ints([1])]), freqs]); // [n, 20]
    return g.op("Concat", [g.op("Sin", [phase]), g.op("Cos", [phase])], { axis: 1 }); // [n, 40]
  };
  const grid = d.cat(h, w, [2 * PE_FREQS]);
  const rows = g.op("Expand", [g.op("Unsqueeze", [axis(h), g.ints([1])]), grid]);
  const cols = g.op("Expand", [g.op("Unsqueeze", [axis(w), g.ints([0])]), grid]);
  return g.op("Reshape", [g.op("Concat", [rows, cols], { axis: 2 }), g.ints([1, -1, 4 * PE_FREQS])]);
}

/**
 * The query transformer: learned global + local queries (with learned position embeddings); in layer i the
 * local queries cross-attend to level i mod L (keys get the PA position embedding), then self-attention over
 * all queries, then an FFN, each post-norm. Returns [B, global + local, hidden].
 */
function buildQueryTransformer(ctx: ModelContext, cfg: SeeCoderQueryConfig, levels: FeatureMap[]): Value {
  const g = ctx.g;
  const D = cfg.hidden_dim, H = cfg.nheads;
  const [nG, nL] = cfg.num_queries;
  const maps = levels.map((l) => l.value);
  // PA: one MLP (Linear, SiLU, Linear, SiLU, Linear) on each level's position features.
  const positions = levels.map(() => null as Value | null);
  if (cfg.with_fea2d_pos) {
    ctx.scope("pe_layer", () =>
      ctx.scope("mlp", () => {
        const inF = 4 * PE_FREQS;
        const w = [0, 2, 4].map((i, j) =>
          ctx.scope(i, () => ({
            w: ctx.param("weight", [D, j ? D : inF], "fan_in"),
            b: ctx.param("bias", [D], "zeros"),
          }))
        );
        levels.forEach((level, lvl) => {
          let p = positionFeatures(g, level.height, level.width);
          w.forEach((layer, j) => {
            p = ops.linear(g, p, layer.w, layer.b);
            if (j < w.length - 1) p = ops.silu(g, p);
          });
          positions[lvl] = p;
        });
      }));
  }
  const levelEmbed = ctx.scope(
    "level_embed",
    () => ctx.param("weight", [cfg.num_feature_levels, D], "embedding"),
  );
  const projected = cfg.in_channels !== D || cfg.enforce_input_project
    ? ctx.scope("input_proj", () => maps.map((m, i) => ctx.conv(String(i), m, cfg.in_channels, D, 1)))
    : maps;
  const fea = projected.map((m, i) =>
    g.op("Add", [ops.toSequence(g, m, D), g.op("Gather", [levelEmbed, g.ints([i])], { axis: 0 })])
  );
  const keys = fea.map((f, i) => (positions[i] ? g.op("Add", [f, positions[i]!]) : f));
  const queries = ctx.scope("init_query", () => ctx.param("weight", [nG + nL, D], "embedding"));
  const queryPos = ctx.scope("query_pos_embedding", () => ctx.param("weight", [nG + nL, D], "embedding"));
  const batch = g.op("Shape", [maps[0]], { start: 0, end: 1 });
  const expand = (t: Value, n: number) =>
    g.op("Expand", [t, g.op("Concat", [batch, g.ints([n, D])], { axis: 0 })]);
  const rows = (t: Value, a: number, b: number) => g.op("Slice", [t, g.ints([a]), g.ints([b]), g.ints([0])]);
  let all = expand(queries, nG + nL);
  const lPos = rows(queryPos, nG, nG + nL);
  for (let i = 0; i < cfg.num_layers; i++) {
    const lvl = i % cfg.num_feature_levels;
    const gq = g.op("Slice", [all, g.ints([0]), g.ints([nG]), g.ints([1])]);
    let lq = g.op("Slice", [all, g.ints([nG]), g.ints([nG + nL]), g.ints([1])]);
    lq = ctx.scope("transformer_crossatt_layers", () =>
      ctx.scope(i, () => {
        const a = multiheadAttention(
          ctx,
          "multihead_attn",
          g.op("Add", [lq, lPos]),
          keys[lvl],
          fea[lvl],
          D,
          H,
        );
        return ctx.layerNorm("norm", g.op("Add", [lq, a]), D, LN_EPS);
      }));
    all = g.op("Concat", [gq, lq], { axis: 1 });
    all = ctx.scope("transformer_selfatt_layers", () =>
      ctx.scope(i, () => {
        const qk = g.op("Add", [all, queryPos]);
        const a = multiheadAttention(ctx, "self_attn", qk, qk, all, D, H);
        return ctx.layerNorm("norm", g.op("Add", [all, a]), D, LN_EPS);
      }));
    all = ctx.scope(
      "transformer_feedforward_layers",
      () => ctx.scope(i, () => feedForward(ctx, all, D, cfg.feedforward_dim, "norm")),
    );
  }
  return all;
}
