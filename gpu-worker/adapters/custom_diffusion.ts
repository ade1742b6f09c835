/**
 * Custom Diffusion adapters as files, and their use at inference.
 *
 * File: diffusers' `pytorch_custom_diffusion_weights.safetensors` layout, the fine-tuned cross-attention weights
 * under the attention processor's names (`<attn2 path>.processor.to_k_custom_diffusion.weight`,
 * `to_v_custom_diffusion`, and for `crossattn` also `to_q_custom_diffusion` and `to_out_custom_diffusion.0`),
 * plus each modifier token's embedding as a tensor named by the token (`<new1>`, the key diffusers' own
 * `<new1>.safetensors` uses), and the run's description in the `info` metadata. A compressed adapter stores,
 * instead of a full weight, the top singular directions of its change from the base weight
 * (`...to_k_custom_diffusion.delta.up.weight` [out, r] and `.delta.down.weight` [r, in]; our extension).
 * {@link splitDiffusersFiles} gives the files as diffusers writes them (weights file + one file per token).
 *
 * Inference: the change W - W0 of each layer rides on the pipeline's LoRA slot of that linear, factored
 * exactly (rank min(out, in), or the stored rank when compressed), so no session is rebuilt.
 *
 * @example
 * ```ts
 * const a = decodeCustomDiffusion(bytes, "cat.safetensors");
 * const lora = customDiffusionDelta(a, pipe.folder.weights.unet);
 * await pipe.generate({ prompt: "a <new1> cat", tokens: a.tokens, adapters: [{ lora, scale: 1 }] });
 * ```
 */
import {
  readSafetensors,
  type SafetensorsFile,
  type TensorData,
  writeSafetensors,
} from "../models/safetensors.ts";
import type { LoraWeights } from "../pipelines/stable_diffusion.ts";
// Decoding a file a request brought, or fitting it to the base model, fails with the input's fault.
import { AdapterError } from "../input_error.ts";

export const CUSTOM_DIFFUSION_FILE_NAME = "pytorch_custom_diffusion_weights.safetensors";

/** The attn2 projections Custom Diffusion may train, by UNet linear name suffix -> processor tensor name. */
const PROCESSOR_NAMES: Record<string, string> = {
  "to_k": "to_k_custom_diffusion",
  "to_v": "to_v_custom_diffusion",
  "to_q": "to_q_custom_diffusion",
  "to_out.0": "to_out_custom_diffusion.0",
};

/** One trained linear: its full weight, or (compressed) the low-rank change from the base weight. */
export type CustomDiffusionLayer =
  | { kind: "weight"; out: number; in: number; weight: Float32Array }
  | { kind: "delta"; out: number; in: number; rank: number; up: Float32Array; down: Float32Array };

export interface ModifierToken {
  token: string;
  embedding: Float32Array;
}

export interface CustomDiffusionAdapter {
  name: string;
  /** By UNet linear path, e.g. `down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k`. */
  layers: Map<string, CustomDiffusionLayer>;
  tokens: ModifierToken[];
  info: Record<string, unknown>;
}

/** `...attn2.to_k` -> `...attn2.processor.to_k_custom_diffusion`. */
function processorKey(path: string): string {
  const m = path.match(/^(.+\.attn2)\.(to_k|to_v|to_q|to_out\.0)$/);
  if (!m) throw new RangeError(`"${path}" is not an attn2 projection (to_k, to_v, to_q, to_out.0)`);
  return `${m[1]}.processor.${PROCESSOR_NAMES[m[2]]}`;
}

export function encodeCustomDiffusion(a: CustomDiffusionAdapter): Uint8Array {
  const tensors: Record<string, TensorData> = {};
  for (const [path, l] of a.layers) {
    const k = processorKey(path);
    if (l.kind === "weight") {
      if (l.weight.length !== l.out * l.in) {
        throw new RangeError(`${path}: weight is not [${l.out}, ${l.in}]`);
      }
      tensors[`${k}.weight`] = { dtype: "F32", shape: [l.out, l.in], data: l.weight };
    } else {
      tensors[`${k}.delta.up.weight`] = { dtype: "F32", shape: [l.out, l.rank], data: l.up };
      tensors[`${k}.delta.down.weight`] = { dtype: "F32", shape: [l.rank, l.in], data: l.down };
    }
  }
  for (const t of a.tokens) {
    if (tensors[t.token]) throw new RangeError(`token "${t.token}" given twice`);
    tensors[t.token] = { dtype: "F32", shape: [t.embedding.length], data: t.embedding };
  }
  return writeSafetensors(tensors, {
    format: "pt",
    info: JSON.stringify({ name: a.name, method: "custom_diffusion", ...a.info }),
  });
}

/** True when a safetensors file looks like a Custom Diffusion adapter (any processor key). */
export function isCustomDiffusionFile(f: SafetensorsFile): boolean {
  return f.names().some((n) =>
    /\.processor\.to_[kvq](_out)?_custom_diffusion/.test(n) || /\.processor\.to_out_custom_diffusion/.test(n)
  );
}

/** Reads an adapter file; errors (AdapterError) name the file and the tensor. */
export function decodeCustomDiffusion(bytes: Uint8Array, source: string): CustomDiffusionAdapter {
  const f = readSafetensors(bytes, source);
  const layers = new Map<string, CustomDiffusionLayer>();
  const tokens: ModifierToken[] = [];
  const inverse = new Map(Object.entries(PROCESSOR_NAMES).map(([k, v]) => [v, k]));
  for (const key of f.names()) {
    const m = key.match(
      /^(.+\.attn2)\.processor\.(to_[kvq]_custom_diffusion|to_out_custom_diffusion\.0)\.(weight|bias|delta\.up\.weight|delta\.down\.weight)$/,
    );
    const shape = f.entry(key).shape;
    if (!m) {
      if (shape.length === 1 && !key.includes(".")) {
        tokens.push({ token: key, embedding: f.float32(key) });
        continue;
      }
      throw new AdapterError(`${source}: unexpected tensor "${key}" [${shape}] in a Custom Diffusion file`);
    }
    const path = `${m[1]}.${inverse.get(m[2])}`;
    if (m[3] === "bias") continue; // biases stay the base model's (see the module doc)
    if (m[3] === "weight") {
      if (shape.length !== 2) throw new AdapterError(`${source}: "${key}" is [${shape}], expected [out, in]`);
      layers.set(path, { kind: "weight", out: shape[0], in: shape[1], weight: f.float32(key) });
    } else if (m[3] === "delta.up.weight") {
      const downKey = key.replace(/delta\.up\.weight$/, "delta.down.weight");
      if (!f.has(downKey)) throw new AdapterError(`${source}: "${key}" has no "${downKey}"`);
      const d = f.entry(downKey).shape;
      if (shape.length !== 2 || d.length !== 2 || shape[1] !== d[0]) {
        throw new AdapterError(
          `${source}: "${key}" [${shape}] and "${downKey}" [${d}] are not [out, r] and [r, in]`,
        );
      }
      layers.set(path, {
        kind: "delta",
        out: shape[0],
        in: d[1],
        rank: d[0],
        up: f.float32(key),
        down: f.float32(downKey),
      });
    }
  }
  if (!layers.size) {
    throw new AdapterError(
      `${source}: no Custom Diffusion tensors (expected keys like <attn2>.processor.to_k_custom_diffusion.weight)`,
    );
  }
  let info: Record<string, unknown> = {};
  try {
    info = f.metadata.info ? JSON.parse(f.metadata.info) : {};
  } catch {
    info = {};
  }
  // Tensors come back in key order; the run's own order (info.tokens) pairs them with info.class_words.
  const order = Array.isArray(info.tokens) ? (info.tokens as unknown[]).map(String) : [];
  const rank = (t: ModifierToken) => {
    const i = order.indexOf(t.token);
    return i < 0 ? order.length : i;
  };
  tokens.sort((a, b) => rank(a) - rank(b));
  return { name: String(info.name ?? source), layers, tokens, info };
}

/** The base weight [out, in] of a UNet linear from the base model's UNet file. */
export function baseLinearWeight(unet: SafetensorsFile, path: string): Float32Array {
  const key = `${path}.weight`;
  if (!unet.has(key)) {
    throw new AdapterError(`the base model has no "${key}": the adapter was trained for another base model`);
  }
  return unet.float32(key);
}

/** The full fine-tuned weight of a layer (a compressed one is base + up x down). */
export function layerWeight(l: CustomDiffusionLayer, base: Float32Array): Float32Array {
  if (l.kind === "weight") return l.weight;
  const w = Float32Array.from(base);
  for (let o = 0; o < l.out; o++) {
    for (let r = 0; r < l.rank; r++) {
      const u = l.up[o * l.rank + r];
      if (u === 0) continue;
      for (let i = 0; i < l.in; i++) w[o * l.in + i] += u * l.down[r * l.in + i];
    }
  }
  return w;
}

/**
 * The pipeline's LoRA view of fine-tuned weights: per layer, the change W - W0 as an exact factorization (rank
 * min(out, in): an identity on the smaller side), or a compressed layer's own factors; scale 1 everywhere
 * (no alpha: each module's rank may differ).
 */
export function weightsAsLora(
  name: string,
  layers: Map<string, CustomDiffusionLayer>,
  unet: SafetensorsFile,
): LoraWeights {
  const modules: LoraWeights["modules"] = new Map();
  for (const [path, l] of layers) {
    const base = baseLinearWeight(unet, path);
    if (base.length !== l.out * l.in) {
      throw new AdapterError(
        `${path}: the adapter's weight is [${l.out}, ${l.in}], the base model's has ${base.length} values`,
      );
    }
    if (l.kind === "delta") {
      modules.set(path, { up: l.up, down: l.down, rank: l.rank });
      continue;
    }
    const delta = new Float32Array(l.out * l.in);
    for (let i = 0; i < delta.length; i++) delta[i] = l.weight[i] - base[i];
    if (l.out <= l.in) modules.set(path, { up: identity(l.out), down: delta, rank: l.out });
    else modules.set(path, { up: delta, down: identity(l.in), rank: l.in });
  }
  return { name, modules };
}

function identity(n: number): Float32Array {
  const m = new Float32Array(n * n);
  for (let i = 0; i < n; i++) m[i * n + i] = 1;
  return m;
}

/**
 * The files diffusers writes for a Custom Diffusion run: the weights file (no token tensors, no `delta`
 * keys: compressed layers are expanded against the base) and one `<token>.safetensors` per modifier token.
 */
export function splitDiffusersFiles(
  a: CustomDiffusionAdapter,
  unet: SafetensorsFile,
): { name: string; bytes: Uint8Array }[] {
  const tensors: Record<string, TensorData> = {};
  for (const [path, l] of a.layers) {
    tensors[`${processorKey(path)}.weight`] = {
      dtype: "F32",
      shape: [l.out, l.in],
      data: layerWeight(l, baseLinearWeight(unet, path)),
    };
  }
  const files = [{ name: CUSTOM_DIFFUSION_FILE_NAME, bytes: writeSafetensors(tensors, { format: "pt" }) }];
  for (const t of a.tokens) {
    files.push({
      name: `${t.token}.safetensors`,
      bytes: writeSafetensors({
        [t.token]: { dtype: "F32", shape: [t.embedding.length], data: t.embedding },
      }),
    });
  }
  return files;
}
