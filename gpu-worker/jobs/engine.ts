/**
 * The worker's engine: one Worker-thread runner (ONNX Runtime never runs on the thread that heartbeats),
 * pipelines cached per base model (sessions built once, then every tenant's adapters ride on them as LoRA slot
 * inputs), and adapter files (LoRA, Custom Diffusion) cached by sha256 (least recently used out first).
 *
 * @example
 * ```ts
 * const engine = new WorkerEngine({ modelsDir: "models", ep: "cpu", workDir: "/tmp/w" });
 * const pipe = await engine.pipeline("tiny-shapes");
 * const a = await engine.adapter(ref, (r) => edge.getBlob(r)); // { kind: "lora", lora } or Custom Diffusion
 * ```
 */
import { EngineRunner } from "../ort/runner.ts";
import type { ExecutionProvider } from "../ort/session_spec.ts";
import { type LoraWeights, StableDiffusionPipeline } from "../pipelines/stable_diffusion.ts";
import { decodeLora, toLoraWeights } from "../adapters/lora.ts";
import {
  type CustomDiffusionAdapter,
  decodeCustomDiffusion,
  isCustomDiffusionFile,
} from "../adapters/custom_diffusion.ts";
import { readSafetensors } from "../models/safetensors.ts";
import {
  describeFullCheckpoint,
  isFullCheckpointFile,
  loadFullCheckpoint,
  materializeFullCheckpoint,
} from "../adapters/full_checkpoint.ts";
import type { BlobRef } from "../../shared/worker_protocol.ts";
import { AdapterError, InputError } from "../input_error.ts";

export interface WorkerEngineOptions {
  modelsDir: string;
  ep: ExecutionProvider;
  /** Where graphs too large for protobuf are written (the models folder may be read-only). */
  workDir: string;
  /** LoRA files kept decoded (default 32). */
  loraCacheSize?: number;
}

/**
 * Runs a decoder on an adapter file a job brought: whatever it refuses about the bytes is the file's fault,
 * so it surfaces as an AdapterError (the job fails without a retry), with the decoder's message.
 */
function decodeAdapterFile<T>(decode: () => T): T {
  try {
    return decode();
  } catch (e) {
    if (e instanceof InputError) throw e;
    throw new AdapterError((e as Error).message, { cause: e });
  }
}

/** Model ids are folder names: no separators, no leading dot. */
const MODEL_ID = /^[A-Za-z0-9_][A-Za-z0-9._-]*$/;

/** Base model ids under `modelsDir`: folders holding a diffusers `model_index.json`, sorted. */
export async function servedModels(modelsDir: string): Promise<string[]> {
  const ids: string[] = [];
  for await (const e of Deno.readDir(modelsDir)) {
    if (!e.isDirectory || !MODEL_ID.test(e.name)) continue;
    try {
      await Deno.stat(`${modelsDir}/${e.name}/model_index.json`);
      ids.push(e.name);
    } catch {
      // Not a model folder.
    }
  }
  return ids.sort();
}

/**
 * An adapter file decoded by what it holds: LoRA factors, Custom Diffusion weights and tokens, or a full
 * fine-tune (kept on disk at `path`; served by its own pipeline, see `finetunedPipeline`).
 */
export type DecodedAdapter =
  | { kind: "lora"; lora: LoraWeights }
  | { kind: "custom_diffusion"; adapter: CustomDiffusionAdapter; sha256: string }
  | { kind: "full"; sha256: string; path: string; info: Record<string, unknown> };

/**
 * Get-or-make in a Map of promises kept as a least-recently-used cache: a hit moves to the end, a failed make
 * is forgotten, and entries beyond `max` are dropped oldest first (each handed to `evicted`).
 */
function lruGet<T>(
  map: Map<string, Promise<T>>,
  key: string,
  max: number,
  make: () => Promise<T>,
  evicted?: (key: string, value: Promise<T>) => void,
): Promise<T> {
  let p = map.get(key);
  if (p) map.delete(key);
  else {
    const made = make();
    made.catch(() => {
      if (map.get(key) === made) map.delete(key);
    });
    p = made;
  }
  map.set(key, p);
  while (map.size > max) {
    const oldest = map.keys().next().value!;
    const value = map.get(oldest)!;
    map.delete(oldest);
    evicted?.(oldest, value);
  }
  return p;
}

/** Pipelines of full fine-tunes kept loaded besides the base models' (each holds a whole UNet). */
const FINETUNED_PIPELINES = 2;

export class WorkerEngine {
  readonly runner = new EngineRunner();
  private readonly pipelines = new Map<string, Promise<StableDiffusionPipeline>>();
  /** Pipelines of full fine-tunes by base model and checkpoint, least recently used out first. */
  private readonly finetuned = new Map<string, Promise<StableDiffusionPipeline>>();
  private readonly loras = new Map<string, Promise<DecodedAdapter>>();
  /** Derived values (merged Custom Diffusion sets, their LoRA views) by key, least recently used out first. */
  private readonly derived = new Map<string, Promise<unknown>>();
  /** LoRA blobs downloaded (cache misses), for tests and metrics. */
  loraDownloads = 0;

  constructor(readonly opts: WorkerEngineOptions) {}

  /** The folder of a base model this worker serves; RangeError for an id that is not one. */
  modelDir(baseModel: string): string {
    if (!MODEL_ID.test(baseModel)) throw new RangeError(`base model "${baseModel}" is not a model id`);
    return `${this.opts.modelsDir}/${baseModel}`;
  }

  /** The pipeline of a base model, loaded once (concurrent callers share the load). */
  pipeline(baseModel: string): Promise<StableDiffusionPipeline> {
    let p = this.pipelines.get(baseModel);
    if (!p) {
      p = StableDiffusionPipeline.load(this.modelDir(baseModel), this.runner, {
        ep: this.opts.ep,
        cacheDir: `${this.opts.workDir}/onnx/${baseModel}`,
      });
      this.pipelines.set(baseModel, p);
      p.catch(() => this.pipelines.delete(baseModel));
    }
    return p;
  }

  /** An adapter by content address (LoRA or Custom Diffusion): decoded once, then served from the cache. */
  adapter(ref: BlobRef, download: (ref: BlobRef) => Promise<Uint8Array>): Promise<DecodedAdapter> {
    return lruGet(this.loras, ref.sha256, this.opts.loraCacheSize ?? 32, async () => {
      this.loraDownloads++;
      const bytes = await download(ref);
      const source = `adapter ${ref.sha256.slice(0, 12)}`;
      const file = decodeAdapterFile(() => readSafetensors(bytes, source));
      if (isFullCheckpointFile(file)) {
        const info = decodeAdapterFile(() => describeFullCheckpoint(file).info);
        // Kept on disk, not in this cache's memory: a whole UNet per entry.
        const dir = `${this.opts.workDir}/checkpoints`;
        await Deno.mkdir(dir, { recursive: true });
        const path = `${dir}/${ref.sha256}.safetensors`;
        await Deno.writeFile(`${path}.part`, bytes);
        await Deno.rename(`${path}.part`, path);
        return { kind: "full", sha256: ref.sha256, path, info };
      }
      if (isCustomDiffusionFile(file)) {
        return {
          kind: "custom_diffusion",
          adapter: decodeCustomDiffusion(bytes, source),
          sha256: ref.sha256,
        };
      }
      return { kind: "lora", lora: decodeAdapterFile(() => toLoraWeights(decodeLora(bytes, source))) };
    }, (_, evicted) => {
      // A full checkpoint's file goes with its entry (a pipeline already built from it keeps its own folder).
      evicted.then((d) => d.kind === "full" ? Deno.remove(d.path) : undefined).catch(() => {});
    });
  }

  /**
   * The pipeline of a full fine-tune of `baseModel`: its checkpoint turned into a model folder under the work
   * folder (once; checked against the base model's tensors), then loaded like a base model. The last
   * FINETUNED_PIPELINES stay loaded.
   */
  finetunedPipeline(
    baseModel: string,
    a: Extract<DecodedAdapter, { kind: "full" }>,
  ): Promise<StableDiffusionPipeline> {
    const key = `${baseModel}--${a.sha256.slice(0, 32)}`;
    const dirs = (k: string) => [`${this.opts.workDir}/finetuned/${k}`, `${this.opts.workDir}/onnx/${k}`];
    return lruGet(this.finetuned, key, FINETUNED_PIPELINES, async () => {
      const [dir, cacheDir] = dirs(key);
      try {
        await Deno.stat(`${dir}/model_index.json`);
      } catch {
        await materializeFullCheckpoint(await loadFullCheckpoint(a.path), this.modelDir(baseModel), dir);
      }
      return await StableDiffusionPipeline.load(dir, this.runner, { ep: this.opts.ep, cacheDir });
    }, (oldest, evicted) => {
      evicted.then((x) => x.release()).catch(() => {});
      for (const d of dirs(oldest)) Deno.remove(d, { recursive: true }).catch(() => {});
    });
  }

  /** A value computed once per key (e.g. a merged set of concepts), kept among the last 16. */
  cached<T>(key: string, make: () => Promise<T>): Promise<T> {
    return lruGet(this.derived as Map<string, Promise<T>>, key, 16, make);
  }

  /** Releases the sessions and stops the engine thread. */
  async close(): Promise<void> {
    const loaded = await Promise.allSettled([...this.pipelines.values(), ...this.finetuned.values()]);
    for (const r of loaded) if (r.status === "fulfilled") await r.value.release().catch(() => {});
    this.runner.terminate();
  }

  /** Stops the engine thread at once (a killed worker). */
  terminate(): void {
    this.runner.terminate();
  }
}
