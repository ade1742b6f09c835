/**
 * What an ONNX Runtime session runs on and expects, without ONNX Runtime: the execution-provider names (and
 * the order a session tries them in) and the feed checks run before every `run()`. Kept apart from
 * `session.ts` so that code which only names a provider or checks feeds (the worker's flags, the edge through
 * the shared code) never loads the native onnxruntime-node addon.
 *
 * @example
 * ```ts
 * parseExecutionProvider("cuda"); // "cuda"
 * checkFeeds({ inputs: [{ name: "a", dtype: "float32", shape: [2] }] }, { a: Tensor.f32([2], [1, 2]) });
 * ```
 */
import type { DataType, Dim } from "../graph/builder.ts";
import type { Tensor } from "../tensor.ts";

export const EXECUTION_PROVIDERS = ["cpu", "cuda", "webgpu"] as const;
export type ExecutionProvider = typeof EXECUTION_PROVIDERS[number];

/** Validates a provider name, with the valid ones in the error. */
export function parseExecutionProvider(name: string): ExecutionProvider {
  if ((EXECUTION_PROVIDERS as readonly string[]).includes(name)) return name as ExecutionProvider;
  throw new RangeError(
    `Unsupported execution provider "${name}". Should be one of: ${EXECUTION_PROVIDERS.join(", ")}`,
  );
}

/** The providers a session on `ep` is created with, in order of preference. */
export function providerList(ep: ExecutionProvider): ExecutionProvider[] {
  // CPU stays as a fallback for ops a GPU provider does not implement.
  return ep === "cpu" ? ["cpu"] : [ep, "cpu"];
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
