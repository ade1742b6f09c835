/**
 * Training checkpoints: one safetensors file holding the parameters, AdamW's moments, the step, the run's
 * config and the loss history, written atomically into a folder that keeps the last K
 * (`checkpoint-<step>.safetensors`), so the latest file there is always a complete one.
 *
 * File layout: tensors `param/<name>`, `adamw.m/<name>`, `adamw.v/<name>` (F32); `__metadata__` strings
 * `format` ("training-checkpoint/1"), `step`, `adamw_steps` (JSON {name: count}), `config` (JSON), `losses`
 * (JSON array of numbers; JSON keeps doubles exactly, so a resumed history is bit-identical).
 *
 * @example
 * ```ts
 * await saveCheckpoint("out/ckpt", checkpoint, { keep: 2 });
 * const path = await latestCheckpoint("out/ckpt"); // ".../checkpoint-<highest step>.safetensors" or null
 * const restored = await loadCheckpoint(path!);
 * ```
 */
import { readSafetensors, type TensorData, writeSafetensors } from "../models/safetensors.ts";
import type { AdamWState } from "./optimizer.ts";
import { CheckpointError } from "../input_error.ts";

export const CHECKPOINT_FORMAT = "training-checkpoint/1";

/** A parameter as stored: shape and float32 data. */
export interface CheckpointParam {
  shape: number[];
  data: Float32Array;
}

/** Everything needed to resume a run. */
export interface TrainingCheckpoint {
  /** Optimizer updates completed. */
  step: number;
  params: Record<string, CheckpointParam>;
  optimizer: AdamWState;
  /** JSON-serializable run configuration. */
  config: Record<string, unknown>;
  /** Loss per completed step (index i is step i + 1). */
  losses: number[];
}

/**
 * Raised for a checkpoint that is not one of ours or is inconsistent; names the file. An `InputError`
 * (`../input_error.ts`): the job layer fails such a job instead of retrying it.
 */
export { CheckpointError };

const FILE_RE = /^checkpoint-(\d+)\.safetensors$/;

/** `checkpoint-<step>.safetensors`. */
export function checkpointFileName(step: number): string {
  return `checkpoint-${step}.safetensors`;
}

/** Serializes a checkpoint to safetensors bytes. */
export function encodeCheckpoint(ckpt: TrainingCheckpoint): Uint8Array {
  const tensors: Record<string, TensorData> = {};
  for (const [name, p] of Object.entries(ckpt.params)) {
    const m = ckpt.optimizer.m[name], v = ckpt.optimizer.v[name];
    if (!m || !v) throw new CheckpointError(`checkpoint: no optimizer state for parameter "${name}"`);
    tensors[`param/${name}`] = { dtype: "F32", shape: p.shape, data: p.data };
    tensors[`adamw.m/${name}`] = { dtype: "F32", shape: p.shape, data: m };
    tensors[`adamw.v/${name}`] = { dtype: "F32", shape: p.shape, data: v };
  }
  for (const x of ckpt.losses) {
    if (!Number.isFinite(x)) {
      throw new CheckpointError(`checkpoint: loss history holds ${x}; refusing to save`);
    }
  }
  return writeSafetensors(tensors, {
    format: CHECKPOINT_FORMAT,
    step: String(ckpt.step),
    adamw_steps: JSON.stringify(ckpt.optimizer.steps),
    config: JSON.stringify(ckpt.config),
    losses: JSON.stringify(ckpt.losses),
  });
}

/** Parses checkpoint bytes; `source` names the file in errors. */
export function decodeCheckpoint(bytes: Uint8Array, source = "<bytes>"): TrainingCheckpoint {
  const file = readSafetensors(bytes, source);
  const meta = file.metadata;
  if (meta.format !== CHECKPOINT_FORMAT) {
    throw new CheckpointError(
      `${source}: format ${JSON.stringify(meta.format)}, expected "${CHECKPOINT_FORMAT}"`,
    );
  }
  const json = (key: string): unknown => {
    try {
      return JSON.parse(meta[key]);
    } catch (e) {
      throw new CheckpointError(`${source}: metadata "${key}" is not valid JSON (${(e as Error).message})`);
    }
  };
  const step = Number(meta.step);
  if (!Number.isSafeInteger(step) || step < 0) {
    throw new CheckpointError(`${source}: bad step "${meta.step}"`);
  }
  const steps = json("adamw_steps") as Record<string, number>;
  const config = json("config") as Record<string, unknown>;
  const losses = json("losses") as number[];
  if (!Array.isArray(losses) || !losses.every((x) => typeof x === "number")) {
    throw new CheckpointError(`${source}: metadata "losses" is not an array of numbers`);
  }
  const ckpt: TrainingCheckpoint = {
    step,
    params: {},
    optimizer: { m: {}, v: {}, steps: {} },
    config,
    losses,
  };
  for (const key of file.names()) {
    if (!key.startsWith("param/")) continue;
    const name = key.slice("param/".length);
    for (const k of [`adamw.m/${name}`, `adamw.v/${name}`]) {
      if (!file.has(k)) throw new CheckpointError(`${source}: parameter "${name}" has no tensor "${k}"`);
    }
    if (typeof steps?.[name] !== "number") {
      throw new CheckpointError(`${source}: parameter "${name}" has no optimizer step count`);
    }
    ckpt.params[name] = { shape: file.entry(key).shape, data: file.float32(key) };
    ckpt.optimizer.m[name] = file.float32(`adamw.m/${name}`);
    ckpt.optimizer.v[name] = file.float32(`adamw.v/${name}`);
    ckpt.optimizer.steps[name] = steps[name];
  }
  return ckpt;
}

/** Reads and parses a checkpoint file. */
export async function loadCheckpoint(path: string): Promise<TrainingCheckpoint> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    throw new CheckpointError(`${path}: cannot read (${(e as Error).message})`);
  }
  return decodeCheckpoint(bytes, path);
}

/** Checkpoint files in `dir` as {step, path}, oldest first; an absent folder has none. */
export async function listCheckpoints(dir: string): Promise<{ step: number; path: string }[]> {
  const found: { step: number; path: string }[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      const m = e.isFile ? FILE_RE.exec(e.name) : null;
      if (m) found.push({ step: Number(m[1]), path: `${dir}/${e.name}` });
    }
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
  return found.sort((a, b) => a.step - b.step);
}

/** Path of the highest-step checkpoint in `dir`, or null when there is none. */
export async function latestCheckpoint(dir: string): Promise<string | null> {
  const all = await listCheckpoints(dir);
  return all.length ? all[all.length - 1].path : null;
}

/**
 * Writes `checkpoint-<step>.safetensors` into `dir` (created if needed) atomically: the bytes go to a temp
 * file in the same folder, are flushed to disk, then renamed over the final name, so a crash leaves either
 * the previous set of files or the new complete one. Then only the `keep` highest-step checkpoints are kept
 * (and temp files left by an earlier crash are removed). Returns the path written.
 */
export async function saveCheckpoint(
  dir: string,
  ckpt: TrainingCheckpoint,
  opts: { keep?: number } = {},
): Promise<string> {
  const keep = opts.keep ?? Infinity;
  if (!(keep >= 1)) throw new RangeError(`saveCheckpoint: keep ${keep} must be at least 1`);
  const bytes = encodeCheckpoint(ckpt);
  await Deno.mkdir(dir, { recursive: true });
  const path = `${dir}/${checkpointFileName(ckpt.step)}`;
  const tmp = `${dir}/.${checkpointFileName(ckpt.step)}.${crypto.randomUUID()}.tmp`;
  try {
    const f = await Deno.open(tmp, { write: true, createNew: true });
    try {
      let off = 0;
      while (off < bytes.byteLength) off += await f.write(bytes.subarray(off));
      await f.syncData();
    } finally {
      f.close();
    }
    await Deno.rename(tmp, path);
    await syncDir(dir);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
  await pruneCheckpoints(dir, keep, tmp);
  return path;
}

/** Flushes the folder entry of the rename (best effort: not every platform opens folders). */
async function syncDir(dir: string): Promise<void> {
  let d: Deno.FsFile | undefined;
  try {
    d = await Deno.open(dir, { read: true });
    await d.syncData();
  } catch {
    // Windows cannot open a directory as a file; the rename itself is still atomic.
  } finally {
    d?.close();
  }
}

async function pruneCheckpoints(dir: string, keep: number, ownTmp: string): Promise<void> {
  const all = await listCheckpoints(dir);
  for (const { path } of all.slice(0, Math.max(0, all.length - keep))) await Deno.remove(path);
  for await (const e of Deno.readDir(dir)) {
    const p = `${dir}/${e.name}`;
    if (e.isFile && /^\.checkpoint-\d+\.safetensors\..+\.tmp$/.test(e.name) && p !== ownTmp) {
      await Deno.remove(p).catch(() => {});
    }
  }
}
