/**
 * EngineRunner: ONNX Runtime sessions that live in a Deno Worker thread. Callers on the main thread await
 * runs without ever blocking their event loop (a timer keeps firing while the UNet runs).
 *
 * @example
 * ```ts
 * const runner = new EngineRunner();
 * const s = await runner.createSession(bytes, spec, "cpu");
 * const { y } = await s.run({ x: Tensor.f32([2], [1, 2]) });
 * runner.terminate();
 * ```
 */
import type { DataType } from "../graph/builder.ts";
import { Tensor, type TensorData } from "../tensor.ts";
import type { ExecutionProvider, SessionOptions, SessionSpec } from "./session.ts";
import { parseExecutionProvider } from "./session.ts";

export interface WireTensor {
  dtype: DataType;
  dims: number[];
  data: TensorData;
}

export type RunnerRequest =
  | {
    id: number;
    kind: "create";
    model: Uint8Array | string;
    spec: SessionSpec;
    ep: ExecutionProvider;
    options: SessionOptions;
  }
  | { id: number; kind: "run"; session: number; feeds: Record<string, WireTensor>; outputs?: string[] }
  | { id: number; kind: "release"; session: number };

export type RunnerResponse =
  | { id: number; ok: true; session?: number; outputNames?: string[]; outputs?: Record<string, WireTensor> }
  | { id: number; ok: false; error: string; errorName: string };

/** A session handle on the main thread. */
export interface RemoteSession {
  readonly spec: SessionSpec;
  readonly outputNames: string[];
  run(feeds: Record<string, Tensor>, outputs?: string[]): Promise<Record<string, Tensor>>;
  release(): Promise<void>;
}

export class EngineRunner {
  private worker: Worker;
  private pending = new Map<number, { resolve: (r: RunnerResponse) => void }>();
  private nextId = 1;

  constructor() {
    this.worker = new Worker(new URL("./runner_worker.ts", import.meta.url).href, { type: "module" });
    this.worker.onmessage = (ev: MessageEvent<RunnerResponse>) => {
      const p = this.pending.get(ev.data.id);
      this.pending.delete(ev.data.id);
      p?.resolve(ev.data);
    };
    this.worker.onerror = (ev) => {
      ev.preventDefault();
      for (const p of this.pending.values()) {
        p.resolve({ id: -1, ok: false, error: `engine worker crashed: ${ev.message}`, errorName: "Error" });
      }
      this.pending.clear();
    };
  }

  private async call(
    req: RunnerRequest,
    transfer: Transferable[] = [],
  ): Promise<RunnerResponse & { ok: true }> {
    const res = await new Promise<RunnerResponse>((resolve) => {
      this.pending.set(req.id, { resolve });
      this.worker.postMessage(req, { transfer });
    });
    if (!res.ok) {
      const Ctor = res.errorName === "TypeError"
        ? TypeError
        : res.errorName === "RangeError"
        ? RangeError
        : Error;
      throw new Ctor(res.error);
    }
    return res;
  }

  /** Creates a session in the engine thread. Model bytes are copied, not transferred. */
  async createSession(
    model: Uint8Array | string,
    spec: SessionSpec,
    ep: ExecutionProvider | string = "cpu",
    options: SessionOptions = {},
  ): Promise<RemoteSession> {
    const provider = parseExecutionProvider(ep);
    const res = await this.call({ id: this.nextId++, kind: "create", model, spec, ep: provider, options });
    const sessionId = res.session!;
    return {
      spec,
      outputNames: res.outputNames!,
      run: async (feeds, outputs) => {
        const wire: Record<string, WireTensor> = {};
        for (const [k, t] of Object.entries(feeds)) wire[k] = { dtype: t.dtype, dims: t.dims, data: t.data };
        const r = await this.call({
          id: this.nextId++,
          kind: "run",
          session: sessionId,
          feeds: wire,
          outputs,
        });
        const out: Record<string, Tensor> = {};
        for (const [k, t] of Object.entries(r.outputs!)) out[k] = new Tensor(t.dtype, t.dims, t.data);
        return out;
      },
      release: async () => {
        await this.call({ id: this.nextId++, kind: "release", session: sessionId });
      },
    };
  }

  terminate(): void {
    this.worker.terminate();
  }
}
