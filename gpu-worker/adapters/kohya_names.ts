/**
 * kohya / LECO LoRA key names (`lora_unet_<module_with_underscores>`, `lora_te_...`) mapped back to the dotted
 * module paths of diffusers and transformers. ORT-free and dependency-free, so the edge's download converter
 * and the worker's decoder share it.
 *
 * @example
 * ```ts
 * kohyaModulePath("unet", "mid_block_resnets_0_time_emb_proj"); // "mid_block.resnets.0.time_emb_proj"
 * ```
 */

/** Words of diffusers / transformers module names that contain an underscore (kohya's keys flatten them). */
const COMPOUND_WORDS = [
  "conv_norm_out",
  "final_layer_norm",
  "down_blocks",
  "up_blocks",
  "mid_block",
  "transformer_blocks",
  "to_q",
  "to_k",
  "to_v",
  "to_out",
  "proj_in",
  "proj_out",
  "conv_shortcut",
  "time_emb_proj",
  "time_embedding",
  "linear_1",
  "linear_2",
  "conv_in",
  "conv_out",
  "text_model",
  "self_attn",
  "q_proj",
  "k_proj",
  "v_proj",
  "out_proj",
  "layer_norm1",
  "layer_norm2",
].map((w) => w.split("_"));

/**
 * A kohya key's module (`down_blocks_0_attentions_0_proj_in`) as a dotted module path, joining the parts
 * of the known compound words back with underscores; text-encoder paths lose `text_model.` (the engine's
 * text-encoder module paths start at `encoder.`).
 */
export function kohyaModulePath(tower: "unet" | "te", flat: string): string {
  const parts = flat.split("_");
  const out: string[] = [];
  for (let i = 0; i < parts.length;) {
    const word = COMPOUND_WORDS.find((w) => w.every((p, k) => parts[i + k] === p));
    const n = word?.length ?? 1;
    out.push(parts.slice(i, i + n).join("_"));
    i += n;
  }
  const path = out.join(".");
  return tower === "te" ? path.replace(/^text_model\./, "") : path;
}
