/**
 * The one module that imports onnxruntime-node: execution-provider choice, session creation, input checks
 * before each run. Call it from the engine's Worker thread (see `runner.ts`), never from the HTTP thread:
 * `run()` blocks the thread it runs on.
 *
 * @example
 * ```ts
 * const s = await OrtSession.create(modelBytes, { inputs: [{ name: "a", dtype: "float32", shape: [2] }] }, "cpu");
 * const out = await s.run({ a: Tensor.f32([2], [1, 2]) });
 * ```
 */
import * as ort from "onnxruntime-node";
import type { DataType, Dim } from "../graph/builder.ts";
import { Tensor } from "../tensor.ts";

export const EXECUTION_PROVIDERS = ["cpu", "cuda", "webgpu"] as const;
export type ExecutionProvider = typeof EXECUTION_PROVIDERS[number];

/** Validates a provider name, with the valid ones in the error. */
export function parseExecutionProvider(name: string): ExecutionProvider {
  if ((EXECUTION_PROVIDERS as readonly string[]).includes(name)) return name as ExecutionProvider;
  throw new RangeError(
    `Unsupported execution provider "${name}". Should be one of: ${EXECUTION_PROVIDERS.join(", ")}`,
  );
}

/** The inputs a session expects (from the graph builder), used to check feeds before running. */
export interface SessionSpec {
  inputs: { name: string; dtype: DataType; shape: Dim[] }[];
}

/** Checks feeds against the spec; errors name the input and the expected vs given dtype/shape. */
export function checkFeeds(spec: SessionSpec, feeds: Record<string, Tensor>): void {
  const problems: string[] = [];
  for (const inp of spec.inputs) {
    const t = feeds[inp.name];
    if (!t) {
      problems.push(`missing input "${inp.name}" (${inp.dtype} [${inp.shape.join(", ")}])`);
      continue;
    }
    if (t.dtype !== inp.dtype) {
      problems.push(`input "${inp.name}": expected dtype ${inp.dtype}, given ${t.dtype}`);
    }
    const badRank = t.dims.length !== inp.shape.length;
    const badDim = !badRank && inp.shape.some((d, i) => typeof d === "number" && d !== t.dims[i]);
    if (badRank || badDim) {
      problems.push(
        `input "${inp.name}": expected shape [${inp.shape.join(", ")}], given [${t.dims.join(", ")}]`,
      );
    }
  }
  const known = new Set(spec.inputs.map((i) => i.name));
  for (const name of Object.keys(feeds)) {
    if (!known.has(name)) problems.push(`unknown input "${name}" (expected: ${[...known].join(", ")})`);
  }
  if (problems.length) throw new TypeError(problems.join("; "));
}

function providerList(ep: ExecutionProvider): string[] {
  // CPU stays as a fallback for ops a GPU provider does not implement.
  return ep === "cpu" ? ["cpu"] : [ep, "cpu"];
}

export interface SessionOptions {
  /** Threads for one op (default: ORT's choice, all cores). */
  intraOpThreads?: number;
  /** Write ORT's per-node profile as JSON files starting with this prefix (for benchmarks). */
  profilePrefix?: string;
}

export class OrtSession {
  private constructor(
    private readonly session: ort.InferenceSession,
    readonly spec: SessionSpec,
    readonly ep: ExecutionProvider,
  ) {}

  /** Creates a session from model bytes or a model path (needed for external data). */
  static async create(
    model: Uint8Array | string,
    spec: SessionSpec,
    ep: ExecutionProvider = "cpu",
    opts: SessionOptions = {},
  ): Promise<OrtSession> {
    parseExecutionProvider(ep);
    const options: ort.InferenceSession.SessionOptions = {
      executionProviders: providerList(ep),
      graphOptimizationLevel: "all",
      // Warnings (e.g. pruned constants of the backward pass) are noise; errors still surface.
      logSeverityLevel: 3,
      ...(opts.intraOpThreads ? { intraOpNumThreads: opts.intraOpThreads } : {}),
      ...(opts.profilePrefix ? { enableProfiling: true, profileFilePrefix: opts.profilePrefix } : {}),
    };
    try {
      const session = typeof model === "string"
        ? await ort.InferenceSession.create(model, options)
        : await ort.InferenceSession.create(model, options);
      return new OrtSession(session, spec, ep);
    } catch (e) {
      throw new Error(`could not create an ONNX Runtime session on "${ep}": ${(e as Error).message}`);
    }
  }

  get outputNames(): readonly string[] {
    return this.session.outputNames;
  }

  /** Checks the feeds, runs, and returns the requested (default: all) outputs as host tensors. */
  async run(feeds: Record<string, Tensor>, outputs?: string[]): Promise<Record<string, Tensor>> {
    checkFeeds(this.spec, feeds);
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const [k, t] of Object.entries(feeds)) {
      ortFeeds[k] = new ort.Tensor(t.dtype as "float32", t.data as Float32Array, t.dims);
    }
    let result: ort.InferenceSession.OnnxValueMapType;
    try {
      result = outputs ? await this.session.run(ortFeeds, outputs) : await this.session.run(ortFeeds);
    } catch (e) {
      const desc = Object.entries(feeds).map(([k, t]) => `${k}: ${t.dtype} [${t.dims.join(", ")}]`).join(
        "; ",
      );
      throw new Error(`ONNX Runtime run failed (${(e as Error).message}); inputs were ${desc}`);
    }
    const out: Record<string, Tensor> = {};
    for (const [k, v] of Object.entries(result)) {
      const t = v as ort.Tensor;
      out[k] = new Tensor(t.type as DataType, [...t.dims], t.data as Float32Array);
    }
    return out;
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}
