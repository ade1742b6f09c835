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

export class LoraConversionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "LoraConversionError";
  }
}

const LORA_KEY =
  /^(?:(unet|text_encoder)\.)?(.+?)\.(lora_A\.weight|lora_B\.weight|lora\.down\.weight|lora\.up\.weight)$/;

export function convertLora(bytes: Uint8Array, format: "peft" | "kohya", source: string): Uint8Array {
  const f = readSafetensors(bytes, source);
  const out: Record<string, TensorData> = {};
  const ranks = new Map<string, number>();
  for (const key of f.names()) {
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
  return writeSafetensors(out, { ...f.metadata, format: "pt", converted_to: format });
}
