/**
 * CLIPTextModel (the SD text encoder) as an ONNX graph with transformers' parameter names (`text_model.*`):
 * token + position embeddings, pre-norm causal transformer layers, final layer norm, and the pooled output
 * at the first end-of-text token. Input `input_ids` int64 [B, L]; outputs `last_hidden_state`, `pooler_output`.
 *
 * The token-embedding table can be split into frozen rows plus extra rows (`extraTokens`), which is how new
 * identifier tokens (`<new1>`) extend a pretrained vocabulary without rewriting it.
 *
 * @example
 * ```ts
 * const g = new GraphBuilder("text_encoder");
 * buildClipTextModel(new ModelContext(g, WeightSource.random(0)), parseClipTextConfig(json));
 * ```
 */
import type { Value } from "../graph/builder.ts";
import * as ops from "../graph/ops.ts";
import type { ModelContext } from "./layers.ts";

/** Graph input holding the embeddings of added tokens. */
export const EXTRA_TOKENS_INPUT = "token_embedding.extra";

export interface ClipTextConfig {
  hidden_size: number;
  intermediate_size: number;
  num_attention_heads: number;
  num_hidden_layers: number;
  max_position_embeddings: number;
  vocab_size: number;
  hidden_act: "quick_gelu" | "gelu";
  layer_norm_eps: number;
  eos_token_id: number;
  bos_token_id: number;
}

/** Reads a transformers CLIPTextConfig (defaults as transformers'). */
export function parseClipTextConfig(raw: Record<string, unknown>): ClipTextConfig {
  const get = <T>(k: string, d: T): T => (raw[k] ?? d) as T;
  const act = get<string>("hidden_act", "quick_gelu");
  if (act !== "quick_gelu" && act !== "gelu") {
    throw new RangeError(`hidden_act "${act}" is not supported; expected quick_gelu or gelu`);
  }
  const cfg: ClipTextConfig = {
    hidden_size: get("hidden_size", 512),
    intermediate_size: get("intermediate_size", 2048),
    num_attention_heads: get("num_attention_heads", 8),
    num_hidden_layers: get("num_hidden_layers", 12),
    max_position_embeddings: get("max_position_embeddings", 77),
    vocab_size: get("vocab_size", 49408),
    hidden_act: act,
    layer_norm_eps: get("layer_norm_eps", 1e-5),
    eos_token_id: get("eos_token_id", 49407),
    bos_token_id: get("bos_token_id", 49406),
  };
  if (cfg.hidden_size % cfg.num_attention_heads !== 0) {
    throw new RangeError(
      `hidden_size ${cfg.hidden_size} is not divisible by num_attention_heads ${cfg.num_attention_heads}`,
    );
  }
  return cfg;
}

/**
 * Builds the text encoder. With `extraTokens`, the graph takes `token_embedding.extra` [n, D]: rows for ids
 * vocab_size, vocab_size + 1, ... (tokens added after pretraining); `n` may differ from run to run.
 */
export function buildClipTextModel(
  ctx: ModelContext,
  cfg: ClipTextConfig,
  io: { extraTokens?: boolean; batch?: number | string; sequence?: number | string } = {},
): Value {
  const g = ctx.g;
  const D = cfg.hidden_size;
  const H = cfg.num_attention_heads;
  const ids = g.input("input_ids", "int64", [io.batch ?? "batch", io.sequence ?? "sequence"]);
  const seqLen = g.op("Gather", [g.op("Shape", [ids]), g.ints([1])], { axis: 0 });

  const hidden0 = ctx.scope("embeddings", () => {
    const tok = ctx.scope("token_embedding", () => {
      let table = ctx.param("weight", [cfg.vocab_size, D], "embedding");
      if (io.extraTokens) {
        const extra = g.input(EXTRA_TOKENS_INPUT, "float32", ["extra_tokens", D]);
        table = g.op("Concat", [table, extra], { axis: 0 });
      }
      return g.op("Gather", [table, ids], { axis: 0 });
    });
    const pos = ctx.scope("position_embedding", () => {
      const table = ctx.param("weight", [cfg.max_position_embeddings, D], "embedding");
      return g.op("Slice", [table, g.ints([0]), seqLen, g.ints([0])]);
    });
    return g.op("Add", [tok, pos]);
  });

  // Causal mask: position i attends to j <= i.
  const P = cfg.max_position_embeddings;
  const maskData = new Float32Array(P * P);
  for (let i = 0; i < P; i++) for (let j = i + 1; j < P; j++) maskData[i * P + j] = -1e9;
  const full = g.constant(maskData, [P, P]);
  const mask = g.op("Slice", [
    g.op("Slice", [full, g.ints([0]), seqLen, g.ints([0])]),
    g.ints([0]),
    seqLen,
    g.ints([1]),
  ]);

  let h = hidden0;
  ctx.scope("encoder", () =>
    ctx.scope("layers", () => {
      for (let l = 0; l < cfg.num_hidden_layers; l++) {
        h = ctx.scope(l, () => {
          const n1 = ctx.layerNorm("layer_norm1", h, D, cfg.layer_norm_eps);
          const attn = ctx.scope("self_attn", () => {
            const q = ctx.linear("q_proj", n1, D, D);
            const k = ctx.linear("k_proj", n1, D, D);
            const v = ctx.linear("v_proj", n1, D, D);
            return ctx.linear("out_proj", ops.attention(g, q, k, v, H, D / H, mask), D, D);
          });
          const r = g.op("Add", [h, attn]);
          const n2 = ctx.layerNorm("layer_norm2", r, D, cfg.layer_norm_eps);
          const mlp = ctx.scope("mlp", () => {
            const f = ctx.linear("fc1", n2, D, cfg.intermediate_size);
            const a = cfg.hidden_act === "quick_gelu" ? ops.quickGelu(g, f) : ops.gelu(g, f);
            return ctx.linear("fc2", a, cfg.intermediate_size, D);
          });
          return g.op("Add", [r, mlp]);
        });
      }
    }));
  const last = ctx.layerNorm("final_layer_norm", h, D, cfg.layer_norm_eps);
  g.output(last, "last_hidden_state", [io.batch ?? "batch", io.sequence ?? "sequence", D]);

  // Pooled output at the first end-of-text token of each row.
  const isEos = g.op("Cast", [g.op("Equal", [ids, g.constant([cfg.eos_token_id], [], "int64")])], { to: 6 });
  const eosPos = g.op("ArgMax", [isEos], { axis: 1, keepdims: 1 }); // [B, 1]
  const idx = g.op("Unsqueeze", [eosPos, g.ints([2])]); // [B, 1, 1]
  const shapeB = g.op("Concat", [
    g.op("Gather", [g.op("Shape", [ids]), g.ints([0])], { axis: 0 }),
    g.ints([1, D]),
  ], { axis: 0 });
  const pooled = g.op("GatherElements", [last, g.op("Expand", [idx, shapeB])], { axis: 1 });
  g.output(g.op("Squeeze", [pooled, g.ints([1])]), "pooler_output", [io.batch ?? "batch", D]);
  return last;
}
