/**
 * A SeeCoder in a model folder: `<model>/seecoder/` with a `config.json` (the `{ imencoder, imdecoder,
 * qtransformer }` arguments `parseSeeCoderConfig` reads; absent: the official Swin-L SeeCoder) and one
 * safetensors file of weights in the official layout (`ctx.image.imencoder.*`, `ctx.image.imdecoder.*`,
 * `ctx.image.qtransformer.*`, as `seecoder-v1-0.safetensors` has them; names without the `ctx.image.` prefix,
 * as third-party loaders strip them, load too). The PA variant is told by its names (`seecoderVariant`), so
 * an official PA file needs no config either. `saveSeeCoderFolder` writes that layout, with the int64
 * `relative_position_index` buffers the official state dict has (the graph computes them; they are written
 * so the file loads into the official module with `strict=True`).
 *
 * @example
 * ```ts
 * if (await hasSeeCoder("models/tiny-shapes")) {
 *   const sc = await loadSeeCoderFolder("models/tiny-shapes"); // { config, weights, prefix, tokens }
 * }
 * ```
 */
import { loadSafetensors, type SafetensorsFile, writeSafetensors } from "../models/safetensors.ts";
import type { TensorData } from "../models/safetensors.ts";
import {
  parseSeeCoderConfig,
  SEECODER_PREFIX,
  type SeeCoderConfig,
  seecoderTokens,
  seecoderVariant,
} from "../models/seecoder.ts";
import { pathExists } from "../fs.ts";

/** The sub-folder of a model folder that holds its SeeCoder. */
export const SEECODER_DIR = "seecoder";
/** The file name the project writes (the official SD 1.5 one is `seecoder-v1-0.safetensors`). */
export const SEECODER_WEIGHTS = "seecoder.safetensors";

export interface SeeCoderFolder {
  dir: string;
  config: SeeCoderConfig;
  /** The raw config.json (empty when absent). */
  rawConfig: Record<string, unknown>;
  weights: SafetensorsFile;
  /** The name prefix of the weights: "ctx.image." (official) or "". */
  prefix: string;
  /** Embedding rows (global + local queries) and their width. */
  tokens: number;
  hidden: number;
}

const exists = pathExists;

/** The safetensors file of a SeeCoder folder: the project's name, the official names, else the only one. */
async function weightsFile(dir: string): Promise<string> {
  const files: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile && e.name.endsWith(".safetensors")) files.push(e.name);
  }
  files.sort();
  for (const name of [SEECODER_WEIGHTS, "seecoder-v1-0.safetensors", "seecoder-pa-v1-0.safetensors"]) {
    if (files.includes(name)) return `${dir}/${name}`;
  }
  if (files.length === 1) return `${dir}/${files[0]}`;
  throw new Error(
    `${dir}: expected one SeeCoder safetensors file (${SEECODER_WEIGHTS} or seecoder-v1-0.safetensors), ` +
      `found ${files.length ? files.join(", ") : "none"}`,
  );
}

/** Whether the model folder `modelDir` has a SeeCoder (a `seecoder/` folder with a safetensors file). */
export async function hasSeeCoder(modelDir: string): Promise<boolean> {
  const dir = `${modelDir}/${SEECODER_DIR}`;
  if (!(await exists(dir))) return false;
  for await (const e of Deno.readDir(dir)) if (e.isFile && e.name.endsWith(".safetensors")) return true;
  return false;
}

/** Reads `<modelDir>/seecoder/`. */
export async function loadSeeCoderFolder(modelDir: string): Promise<SeeCoderFolder> {
  const dir = `${modelDir}/${SEECODER_DIR}`;
  const cfgPath = `${dir}/config.json`;
  const rawConfig = (await exists(cfgPath))
    ? JSON.parse(await Deno.readTextFile(cfgPath)) as Record<string, unknown>
    : {};
  const weights = await loadSafetensors(await weightsFile(dir));
  const names = weights.names();
  const prefix = names.some((n) => n.startsWith(SEECODER_PREFIX)) ? SEECODER_PREFIX : "";
  const q = (rawConfig.qtransformer ?? {}) as Record<string, unknown>;
  const withPa = seecoderVariant(names) === "pa";
  if (q.with_fea2d_pos !== undefined && !!q.with_fea2d_pos !== withPa) {
    throw new Error(
      `${dir}: config.json says with_fea2d_pos ${q.with_fea2d_pos}, the weights are the ` +
        `${withPa ? "PA" : "plain"} variant`,
    );
  }
  const config = parseSeeCoderConfig({ ...rawConfig, qtransformer: { ...q, with_fea2d_pos: withPa } });
  return {
    dir,
    config,
    rawConfig,
    weights,
    prefix,
    tokens: seecoderTokens(config),
    hidden: config.qtransformer.hidden_dim,
  };
}

/** The official `relative_position_index` buffer of a window: [N, N] int64, N = ws^2. */
export function relativePositionIndex(ws: number): BigInt64Array {
  const N = ws * ws;
  const out = new BigInt64Array(N * N);
  for (let i = 0; i < N; i++) {
    for (let j = 0; j < N; j++) {
      const dh = Math.floor(i / ws) - Math.floor(j / ws) + ws - 1;
      const dw = (i % ws) - (j % ws) + ws - 1;
      out[i * N + j] = BigInt(dh * (2 * ws - 1) + dw);
    }
  }
  return out;
}

/**
 * Writes `<modelDir>/seecoder/config.json` and `seecoder.safetensors`: `tensors` by their full names
 * (`ctx.image.*`), plus one `relative_position_index` buffer per Swin block.
 */
export async function saveSeeCoderFolder(
  modelDir: string,
  rawConfig: Record<string, unknown>,
  config: SeeCoderConfig,
  tensors: Iterable<{ name: string; shape: number[]; data: Float32Array }>,
  metadata: Record<string, string> = {},
): Promise<string> {
  const dir = `${modelDir}/${SEECODER_DIR}`;
  await Deno.mkdir(dir, { recursive: true });
  const out: Record<string, TensorData> = {};
  for (const t of tensors) out[t.name] = { dtype: "F32", shape: t.shape, data: t.data };
  const ws = config.imencoder.window_size;
  config.imencoder.depths.forEach((depth, i) => {
    for (let b = 0; b < depth; b++) {
      out[`${SEECODER_PREFIX}imencoder.layers.${i}.blocks.${b}.attn.relative_position_index`] = {
        dtype: "I64",
        shape: [ws * ws, ws * ws],
        data: relativePositionIndex(ws),
      };
    }
  });
  const path = `${dir}/${SEECODER_WEIGHTS}`;
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(rawConfig, null, 2) + "\n");
  await Deno.writeFile(path, writeSafetensors(out, { format: "pt", ...metadata }));
  return path;
}
