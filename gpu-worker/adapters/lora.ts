/**
 * LoRA adapters as files: diffusers' current (PEFT) layout, `unet.<module>.lora_A.weight` [rank, in] and
 * `unet.<module>.lora_B.weight` [out, rank] (text-encoder modules under `text_encoder.text_model.<module>`),
 * with rank, alpha and what the adapter was trained for in the
 * safetensors metadata; loaded back into the pipeline's `LoraWeights`. Older diffusers keys
 * (`<module>.lora.down.weight` / `.lora.up.weight`) and kohya's (`lora_unet_<module_with_underscores>.lora_down
 * .weight` / `.lora_up.weight` / `.alpha`, text encoder `lora_te_...`, as the Concept Sliders repository writes)
 * are read too. Convolution LoRA (LoCon / C3Lier) is 4-D in files: down [rank, in, k, k], up [out, rank, 1, 1].
 *
 * @example
 * ```ts
 * const bytes = encodeLora({ name: "rex", rank: 4, alpha: 4, modules }, { token: "sks" });
 * const lora = decodeLora(bytes, "rex.safetensors");
 * ```
 */
import { AdapterError } from "../input_error.ts";
import { readSafetensors, writeSafetensors } from "../models/safetensors.ts";
import type { LoraWeights } from "../pipelines/stable_diffusion.ts";
import { loraFactorShapes } from "../models/layers.ts";
import { kohyaModulePath } from "./kohya_names.ts";

export { kohyaModulePath };

export interface LoraAdapter {
  name: string;
  rank: number;
  alpha: number;
  /**
   * Per UNet module path: down [rank, in], up [out, rank]; for a convolution (`kernel` k > 0) inFeatures is
   * in_channels x k x k and the flat factors are the 4-D file tensors' bytes.
   */
  modules: Map<
    string,
    { down: Float32Array; up: Float32Array; inFeatures: number; outFeatures: number; kernel?: number }
  >;
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
    const shapes = loraFactorShapes({ path, ...m, kernel: m.kernel ?? 0 }, a.rank);
    tensors[`${k}.lora_A.weight`] = { dtype: "F32", shape: shapes.down, data: m.down };
    tensors[`${k}.lora_B.weight`] = { dtype: "F32", shape: shapes.up, data: m.up };
  }
  return writeSafetensors(tensors, {
    format: "pt",
    lora_rank: String(a.rank),
    lora_alpha: String(a.alpha),
    info: JSON.stringify({ name: a.name, ...info }),
  });
}

/** Reads a LoRA file (PEFT, older diffusers or kohya keys); errors name the file and the offending tensor. */
export function decodeLora(bytes: Uint8Array, source: string): LoraAdapter {
  const f = readSafetensors(bytes, source);
  const modules: LoraAdapter["modules"] = new Map();
  const alphas = new Map<string, number>();
  let rank = 0;
  for (const key of f.names()) {
    let path: string, upKey: string | undefined;
    const kohya = key.match(/^lora_(unet|te)_(.+)\.lora_down\.weight$/);
    const m = key.match(
      /^(unet\.|text_encoder\.(?:text_model\.)?)?(.+?)\.(?:lora_A\.weight|lora\.down\.weight)$/,
    );
    if (kohya) {
      path = kohyaModulePath(kohya[1] as "unet" | "te", kohya[2]);
      const name = key.slice(0, -".lora_down.weight".length);
      upKey = f.has(`${name}.lora_up.weight`) ? `${name}.lora_up.weight` : undefined;
      if (f.has(`${name}.alpha`)) alphas.set(path, f.float32(`${name}.alpha`)[0]);
    } else if (m) {
      const prefix = m[1] ?? "";
      path = m[2];
      upKey = [`${prefix}${path}.lora_B.weight`, `${prefix}${path}.lora.up.weight`].find((k) => f.has(k));
    } else continue;
    if (!upKey) throw new AdapterError(`${source}: "${key}" has no matching up/lora_B tensor`);
    const d = f.entry(key).shape, u = f.entry(upKey).shape;
    const conv = d.length === 4 && u.length === 4 && d[2] === d[3] && u[2] === 1 && u[3] === 1;
    if (!(conv || (d.length === 2 && u.length === 2)) || d[0] !== u[1]) {
      throw new AdapterError(
        `${source}: "${key}" [${d}] and "${upKey}" [${u}] are not a rank-r pair ([r, in] and [out, r], or ` +
          `[r, in, k, k] and [out, r, 1, 1] for a convolution)`,
      );
    }
    if (rank && d[0] !== rank) {
      throw new AdapterError(`${source}: "${key}" has rank ${d[0]}, others have ${rank}`);
    }
    rank = d[0];
    modules.set(path, {
      down: f.float32(key),
      up: f.float32(upKey),
      inFeatures: d.slice(1).reduce((a, b) => a * b, 1),
      outFeatures: u[0],
      ...(conv ? { kernel: d[2] } : {}),
    });
  }
  if (!modules.size) {
    throw new AdapterError(
      `${source}: no LoRA tensors (expected keys like unet.<module>.lora_A.weight or lora_unet_<module>.lora_down.weight)`,
    );
  }
  let alpha = Number(f.metadata.lora_alpha ?? [...alphas.values()][0] ?? rank);
  if (new Set(alphas.values()).size > 1) {
    // kohya files may give every module its own alpha: fold alpha_m / alpha into each up factor.
    alpha = rank;
    for (const [path, a] of alphas) {
      const mod = modules.get(path)!;
      mod.up = mod.up.map((x) => x * (a / rank));
    }
  }
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
