/**
 * A full fine-tune (DreamBooth `mode: "full"`) as one stored file: every UNet tensor under `unet.<key>` and,
 * when the text encoder was trained, every text-encoder tensor under `text_encoder.<key>` (the keys of the
 * diffusers folder's own files), with metadata `checkpoint: "full"` and the run's `info`. The service keeps it
 * beside LoRA and Custom Diffusion adapters; a worker turns it back into a model folder (the base folder's
 * configs, tokenizer, scheduler and VAE, these weights) and loads a pipeline from it.
 *
 * @example
 * ```ts
 * const bytes = await encodeFullCheckpoint("out/rex"); // the folder DreamBooth full mode wrote
 * await materializeFullCheckpoint(readSafetensors(bytes), "models/tiny-shapes", "/tmp/rex-model");
 * ```
 */
import {
  loadSafetensors,
  readSafetensors,
  type SafetensorsFile,
  type TensorData,
  writeSafetensors,
} from "../models/safetensors.ts";
import { pathExists } from "../fs.ts";
import { AdapterError } from "../input_error.ts";

/** The file name a full fine-tune is stored under. */
export const FULL_CHECKPOINT_FILE_NAME = "dreambooth_model.safetensors";

/** The model parts a full checkpoint may replace, and their weight file inside a diffusers folder. */
const PARTS = {
  unet: "unet/diffusion_pytorch_model.safetensors",
  text_encoder: "text_encoder/model.safetensors",
} as const;
type Part = keyof typeof PARTS;

/** Weight files diffusers folders use besides the full-precision one (as `loadModelFolder` looks for them). */
const FP16_NAMES: Record<Part, string> = {
  unet: "unet/diffusion_pytorch_model.fp16.safetensors",
  text_encoder: "text_encoder/model.fp16.safetensors",
};

const FLOAT_DTYPES = new Set(["F32", "F16", "BF16"]);

async function baseWeights(baseDir: string, part: Part): Promise<SafetensorsFile> {
  const full = `${baseDir}/${PARTS[part]}`;
  return await loadSafetensors(await pathExists(full) ? full : `${baseDir}/${FP16_NAMES[part]}`);
}

/**
 * A file that cannot serve as a full fine-tune of a base model (wrong keys, shapes or dtypes): an adapter the
 * job brought that cannot be used, so an `AdapterError` (the job fails without a retry).
 */
export class FullCheckpointError extends AdapterError {}

/** Copies a file's tensors (views, not copies) into `into`, adding a prefix or keeping those under one. */
function copyTensors(
  f: SafetensorsFile,
  into: Record<string, TensorData>,
  o: { add?: string; strip?: string },
) {
  for (const n of f.names()) {
    if (o.strip && !n.startsWith(o.strip)) continue;
    const e = f.entry(n);
    into[(o.add ?? "") + n.slice(o.strip?.length ?? 0)] = {
      dtype: e.dtype,
      shape: e.shape,
      data: f.bytes(n),
    };
  }
}

/**
 * Packs a fine-tuned model folder into one file: its UNet weights and, if `withTextEncoder`, its text-encoder
 * weights. `info` (e.g. the run's token and settings) goes into the metadata as JSON.
 */
export async function encodeFullCheckpoint(
  folder: string,
  o: { withTextEncoder?: boolean; info?: Record<string, unknown> } = {},
): Promise<Uint8Array> {
  const tensors: Record<string, TensorData> = {};
  copyTensors(await loadSafetensors(`${folder}/${PARTS.unet}`), tensors, { add: "unet." });
  if (o.withTextEncoder) {
    copyTensors(await loadSafetensors(`${folder}/${PARTS.text_encoder}`), tensors, { add: "text_encoder." });
  }
  return writeSafetensors(tensors, {
    format: "pt",
    checkpoint: "full",
    info: JSON.stringify(o.info ?? {}),
  });
}

/** Whether a safetensors file is a full checkpoint (rather than a LoRA or Custom Diffusion adapter). */
export function isFullCheckpointFile(f: SafetensorsFile): boolean {
  return f.metadata.checkpoint === "full";
}

/** The parts a full checkpoint replaces, and its `info` metadata. */
export function describeFullCheckpoint(f: SafetensorsFile): { parts: Part[]; info: Record<string, unknown> } {
  const parts = (Object.keys(PARTS) as Part[]).filter((p) => f.names().some((n) => n.startsWith(`${p}.`)));
  let info: Record<string, unknown> = {};
  try {
    info = JSON.parse(f.metadata.info ?? "{}");
  } catch {
    // Unreadable info: keep none.
  }
  return { parts, info };
}

/**
 * Checks a full checkpoint against a base model folder: every key of a part it carries must be a tensor of the
 * base's file, a float tensor of the same shape, and it must carry all of them. Throws FullCheckpointError naming
 * the first mismatch.
 */
export async function checkFullCheckpoint(f: SafetensorsFile, baseDir: string): Promise<void> {
  const { parts } = describeFullCheckpoint(f);
  const stray = f.names().find((n) => !parts.some((p) => n.startsWith(`${p}.`)));
  if (stray !== undefined || !parts.includes("unet")) {
    throw new FullCheckpointError(
      `${f.source}: a full checkpoint holds unet.* (and optionally text_encoder.*) tensors, ` +
        (stray !== undefined ? `found "${stray}"` : "found no unet.* tensor"),
    );
  }
  for (const p of parts) {
    const base = await baseWeights(baseDir, p);
    const mine = f.names().filter((n) => n.startsWith(`${p}.`));
    if (mine.length !== base.names().length) {
      throw new FullCheckpointError(
        `${f.source}: ${p} has ${mine.length} tensors, the base model's ${base.names().length}; ` +
          `it was trained for another base model`,
      );
    }
    for (const n of mine) {
      const key = n.slice(p.length + 1);
      if (!base.has(key)) {
        throw new FullCheckpointError(
          `${f.source}: "${n}" is not a tensor of the base model's ${p}; it was trained for another base model`,
        );
      }
      const [a, b] = [f.entry(n), base.entry(key)];
      if (a.shape.join() !== b.shape.join() || !FLOAT_DTYPES.has(a.dtype)) {
        throw new FullCheckpointError(
          `${f.source}: "${n}" is ${a.dtype} [${a.shape}], expected a float tensor of the base model's shape ` +
            `[${b.shape}]`,
        );
      }
    }
  }
}

/**
 * Writes a model folder at `outDir` (created; replaced if it exists): the parts the checkpoint carries as new
 * weight files, everything else linked to the base folder. Checks the checkpoint against the base first.
 */
export async function materializeFullCheckpoint(
  f: SafetensorsFile,
  baseDir: string,
  outDir: string,
): Promise<void> {
  await checkFullCheckpoint(f, baseDir);
  const { parts } = describeFullCheckpoint(f);
  const tmp = `${outDir}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  await Deno.mkdir(tmp, { recursive: true });
  try {
    const base = await Deno.realPath(baseDir);
    for await (const e of Deno.readDir(base)) {
      if (e.name.startsWith(".")) continue;
      const part = parts.find((p) => PARTS[p].startsWith(`${e.name}/`));
      if (!part) {
        await Deno.symlink(`${base}/${e.name}`, `${tmp}/${e.name}`);
        continue;
      }
      // A replaced part: its own folder, the base's other files (config) linked, the new weights written.
      await Deno.mkdir(`${tmp}/${e.name}`);
      for await (const c of Deno.readDir(`${base}/${e.name}`)) {
        if (!c.name.endsWith(".safetensors")) {
          await Deno.symlink(`${base}/${e.name}/${c.name}`, `${tmp}/${e.name}/${c.name}`);
        }
      }
      const tensors: Record<string, TensorData> = {};
      copyTensors(f, tensors, { strip: `${part}.` });
      await Deno.writeFile(`${tmp}/${PARTS[part]}`, writeSafetensors(tensors, { format: "pt" }));
    }
    await Deno.remove(outDir, { recursive: true }).catch(() => {});
    await Deno.rename(tmp, outDir);
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  }
}

/** Reads a stored full checkpoint from disk (a convenience for the worker's cache). */
export async function loadFullCheckpoint(path: string): Promise<SafetensorsFile> {
  if (!await pathExists(path)) throw new FullCheckpointError(`${path}: no such file`);
  return readSafetensors(await Deno.readFile(path), path);
}
