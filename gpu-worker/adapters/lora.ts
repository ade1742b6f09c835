/**
 * LoRA adapters as files: diffusers' current (PEFT) layout, `unet.<module>.lora_A.weight` [rank, in] and
 * `unet.<module>.lora_B.weight` [out, rank] (text-encoder modules under `text_encoder.text_model.<module>`),
 * with rank, alpha and what the adapter was trained for in the
 * safetensors metadata; loaded back into the pipeline's `LoraWeights`. Older diffusers keys
 * (`<module>.lora.down.weight` / `.lora.up.weight`) are read too.
 *
 * @example
 * ```ts
 * const bytes = encodeLora({ name: "rex", rank: 4, alpha: 4, modules }, { token: "sks" });
 * const lora = decodeLora(bytes, "rex.safetensors");
 * ```
 */
import { readSafetensors, writeSafetensors } from "../models/safetensors.ts";
import type { LoraWeights } from "../pipelines/stable_diffusion.ts";

export interface LoraAdapter {
  name: string;
  rank: number;
  alpha: number;
  /** Per UNet module path: down [rank, in], up [out, rank]. */
  modules: Map<string, { down: Float32Array; up: Float32Array; inFeatures: number; outFeatures: number }>;
  /** Free-form description saved in the metadata (token, class word, training config...). */
  info?: Record<string, unknown>;
}

export const LORA_FILE_NAME = "pytorch_lora_weights.safetensors";

/** Text-encoder module paths (CLIP's `encoder.layers.N...`, without `text_model.`); the rest are the UNet's. */
export function isTextEncoderPath(path: string): boolean {
  return path.startsWith("encoder.layers.");
}

/** The key prefix of a module in diffusers' files: `unet.` or `text_encoder.text_model.`. */
export function loraKeyPrefix(path: string): string {
  return isTextEncoderPath(path) ? "text_encoder.text_model." : "unet.";
}

export function encodeLora(a: LoraAdapter, info: Record<string, unknown> = a.info ?? {}): Uint8Array {
  const tensors: Parameters<typeof writeSafetensors>[0] = {};
  for (const [path, m] of a.modules) {
    const k = loraKeyPrefix(path) + path;
    tensors[`${k}.lora_A.weight`] = { dtype: "F32", shape: [a.rank, m.inFeatures], data: m.down };
    tensors[`${k}.lora_B.weight`] = { dtype: "F32", shape: [m.outFeatures, a.rank], data: m.up };
  }
  return writeSafetensors(tensors, {
    format: "pt",
    lora_rank: String(a.rank),
    lora_alpha: String(a.alpha),
    info: JSON.stringify({ name: a.name, ...info }),
  });
}

/** Reads a LoRA file; errors name the file and the offending tensor. */
export function decodeLora(bytes: Uint8Array, source: string): LoraAdapter {
  const f = readSafetensors(bytes, source);
  const modules: LoraAdapter["modules"] = new Map();
  let rank = 0;
  for (const key of f.names()) {
    const m = key.match(
      /^(unet\.|text_encoder\.(?:text_model\.)?)?(.+?)\.(?:lora_A\.weight|lora\.down\.weight)$/,
    );
    if (!m) continue;
    const prefix = m[1] ?? "";
    const path = m[2];
    const upKey = [`${prefix}${path}.lora_B.weight`, `${prefix}${path}.lora.up.weight`].find((k) => f.has(k));
    if (!upKey) throw new RangeError(`${source}: "${key}" has no matching up/lora_B tensor`);
    const d = f.entry(key).shape, u = f.entry(upKey).shape;
    if (d.length !== 2 || u.length !== 2 || d[0] !== u[1]) {
      throw new RangeError(
        `${source}: "${key}" [${d}] and "${upKey}" [${u}] are not a rank-r pair ([r, in] and [out, r])`,
      );
    }
    if (rank && d[0] !== rank) {
      throw new RangeError(`${source}: "${key}" has rank ${d[0]}, others have ${rank}`);
    }
    rank = d[0];
    modules.set(path, { down: f.float32(key), up: f.float32(upKey), inFeatures: d[1], outFeatures: u[0] });
  }
  if (!modules.size) {
    throw new RangeError(`${source}: no LoRA tensors (expected keys like unet.<module>.lora_A.weight)`);
  }
  const alpha = Number(f.metadata.lora_alpha ?? rank);
  let info: Record<string, unknown> = {};
  try {
    info = f.metadata.info ? JSON.parse(f.metadata.info) : {};
  } catch {
    info = {};
  }
  return { name: String(info.name ?? source), rank, alpha, modules, info };
}

/** The pipeline's view of an adapter. */
export function toLoraWeights(a: LoraAdapter): LoraWeights {
  const modules = new Map<string, { down: Float32Array; up: Float32Array; rank: number }>();
  for (const [p, m] of a.modules) modules.set(p, { down: m.down, up: m.up, rank: a.rank });
  return { name: a.name, modules, alpha: a.alpha };
}
