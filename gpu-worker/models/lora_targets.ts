/**
 * Named sets of LoRA target modules (UNet module paths, diffusers' names), matching the Concept Sliders
 * repository's `train_method`s: its LoRA network wraps the Linear and Conv2d children of every `Attention`
 * module (plus `ResnetBlock2D`, `Downsample2D` and `Upsample2D` for the `c3lier` network type) and filters
 * them by module name: `noxattn` drops cross-attention (attn2) and the time embedding, `innoxattn` drops
 * attn2, `selfattn` keeps only attn1, `xattn` only attn2, `full` keeps every attention. On SD's UNet the
 * first three therefore select the same modules (attn1's to_q, to_k, to_v, to_out.0). `all` is every
 * linear and convolution of the UNet, what a served graph carries so any of these adapters can ride on it.
 *
 * @example
 * ```ts
 * loraTargets("c3lier").some((r) => r.test("down_blocks.0.resnets.0.conv1")); // true
 * ```
 */
const ATTN1 = /attn1\.(to_q|to_k|to_v|to_out\.0)$/;
const ATTN2 = /attn2\.(to_q|to_k|to_v|to_out\.0)$/;
/** A ResnetBlock2D's convolutions and its time-embedding projection (a Linear child of the block). */
const RESNET = /resnets\.\d+\.(conv1|conv2|conv_shortcut|time_emb_proj)$/;
const SAMPLERS = /(downsamplers|upsamplers)\.0\.conv$/;
/** The rest: transformer projections, feed-forward, the UNet's first and last convs, the time embedding. */
const OTHERS =
  /(proj_in|proj_out|ff\.net\.0\.proj|ff\.net\.2|^conv_in|^conv_out|^time_embedding\.linear_[12])$/;

export const LORA_TARGET_SETS = {
  noxattn: [ATTN1],
  innoxattn: [ATTN1],
  selfattn: [ATTN1],
  xattn: [ATTN2],
  full: [ATTN1, ATTN2],
  c3lier: [ATTN1, RESNET, SAMPLERS],
  all: [ATTN1, ATTN2, RESNET, SAMPLERS, OTHERS],
} as const;

export type LoraTargetSet = keyof typeof LORA_TARGET_SETS;

/** The patterns of a named set; RangeError naming the sets for an unknown one. */
export function loraTargets(name: string): RegExp[] {
  if (!Object.hasOwn(LORA_TARGET_SETS, name)) {
    throw new RangeError(
      `unknown LoRA target set "${name}"; expected one of ${Object.keys(LORA_TARGET_SETS).join(", ")}`,
    );
  }
  return [...LORA_TARGET_SETS[name as LoraTargetSet]];
}
