/**
 * LoRA weight files in the layouts users load them with. Adapters are stored as the engine writes them
 * (diffusers' PEFT layout: `unet.<module>.lora_A.weight` / `lora_B`, older `.lora.down/.lora.up` read too);
 * `peft` renames to `base_model.model.<module>.lora_A.weight`, `kohya` to
 * `lora_unet_<module_with_underscores>.lora_down.weight` / `.lora_up.weight` / `.alpha` (text encoder:
 * `lora_te_...`). Renames only: the tensors' bytes are copied as they are.
 *
 * @example
 * ```ts
 * const kohya = convertLora(bytes, "kohya", "rex.safetensors");
 * ```
 */
import { readSafetensors, type TensorData, writeSafetensors } from "../gpu-worker/models/safetensors.ts";
import { kohyaModulePath } from "../gpu-worker/adapters/kohya_names.ts";

export class LoraConversionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "LoraConversionError";
  }
}

const KOHYA_KEY = /^lora_(unet|te)_(.+)\.(lora_down|lora_up)\.weight$/;
const KOHYA_ALPHA = /^lora_(unet|te)_.+\.alpha$/;

const LORA_KEY =
  /^(?:(unet|text_encoder)\.)?(.+?)\.(lora_A\.weight|lora_B\.weight|lora\.down\.weight|lora\.up\.weight)$/;

export function convertLora(bytes: Uint8Array, format: "peft" | "kohya", source: string): Uint8Array {
  const f = readSafetensors(bytes, source);
  const out: Record<string, TensorData> = {};
  const ranks = new Map<string, number>();
  let metaAlpha: string | undefined;
  for (const key of f.names()) {
    // A file in kohya's keys (imported from the sliders repo, ComfyUI, ...): read as the module it names.
    if (KOHYA_ALPHA.test(key)) {
      // Copied with its factors below (kohya), or the file's alpha in the metadata (PEFT).
      if (!f.metadata.lora_alpha) metaAlpha ??= String(f.float32(key)[0]);
      continue;
    }
    const k = KOHYA_KEY.exec(key);
    if (k) {
      const [, kTower, flat, part] = k;
      const tower = kTower === "te" ? "text_encoder" : "unet";
      const path = kohyaModulePath(kTower as "unet" | "te", flat);
      const e = f.entry(key);
      const tensor: TensorData = { dtype: e.dtype, shape: e.shape, data: f.bytes(key) };
      const down = part === "lora_down";
      if (format === "kohya") {
        out[key] = tensor;
        const alpha = `lora_${kTower}_${flat}.alpha`;
        if (f.has(alpha)) out[alpha] = { ...f.entry(alpha), data: f.bytes(alpha) };
        continue;
      }
      if (tower !== "unet") {
        throw new LoraConversionError(
          `${source}: "${key}" belongs to the text encoder; PEFT files hold one model (download kohya or diffusers)`,
        );
      }
      out[`base_model.model.${path}.${down ? "lora_A" : "lora_B"}.weight`] = tensor;
      continue;
    }
    const m = LORA_KEY.exec(key);
    if (!m) {
      throw new LoraConversionError(
        `${source}: "${key}" is not a LoRA tensor; only LoRA adapters convert to ${format} (download format=diffusers)`,
      );
    }
    const [, tower = "unet", module, part] = m;
    const down = part === "lora_A.weight" || part === "lora.down.weight";
    const e = f.entry(key);
    const tensor: TensorData = { dtype: e.dtype, shape: e.shape, data: f.bytes(key) };
    if (format === "peft") {
      if (tower !== "unet") {
        throw new LoraConversionError(
          `${source}: "${key}" belongs to the text encoder; PEFT files hold one model (download kohya or diffusers)`,
        );
      }
      out[`base_model.model.${module}.${down ? "lora_A" : "lora_B"}.weight`] = tensor;
    } else {
      const name = `lora_${tower === "unet" ? "unet" : "te"}_${module.replaceAll(".", "_")}`;
      out[`${name}.${down ? "lora_down" : "lora_up"}.weight`] = tensor;
      if (down) ranks.set(name, e.shape[0]);
    }
  }
  if (!Object.keys(out).length) throw new LoraConversionError(`${source}: holds no LoRA tensors`);
  const alphaMeta = Number(f.metadata.lora_alpha);
  for (const [name, rank] of ranks) {
    out[`${name}.alpha`] = {
      dtype: "F32",
      shape: [],
      data: new Float32Array([Number.isFinite(alphaMeta) ? alphaMeta : rank]),
    };
  }
  const meta: Record<string, string> = metaAlpha ? { lora_alpha: metaAlpha } : {};
  return writeSafetensors(out, { ...f.metadata, ...meta, format: "pt", converted_to: format });
}
