/**
 * The one module that imports onnxruntime-node: session creation on the chosen execution provider, with the
 * input checks of `session_spec.ts` (ORT-free) before each run. Call it from the engine's Worker thread (see
 * `runner.ts`), never from the HTTP thread: `run()` blocks the thread it runs on.
 *
 * @example
 * ```ts
 * const s = await OrtSession.create(modelBytes, { inputs: [{ name: "a", dtype: "float32", shape: [2] }] }, "cpu");
 * const out = await s.run({ a: Tensor.f32([2], [1, 2]) });
 * ```
 */
import * as ort from "onnxruntime-node";
import type { DataType } from "../graph/builder.ts";
import { Tensor } from "../tensor.ts";
import {
  checkFeeds,
  type ExecutionProvider,
  parseExecutionProvider,
  providerList,
  type SessionSpec,
} from "./session_spec.ts";

// The provider names and feed checks live in the ORT-free `session_spec.ts`; re-exported for callers here.
export {
  checkFeeds,
  EXECUTION_PROVIDERS,
  type ExecutionProvider,
  parseExecutionProvider,
  type SessionSpec,
} from "./session_spec.ts";

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
