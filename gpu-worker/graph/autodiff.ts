/**
 * Reverse-mode automatic differentiation over the builder's ONNX graphs: given a scalar loss and the values to
 * differentiate (graph inputs: trainable weights, LoRA factors, new token embeddings, or activations), append
 * the backward pass in standard ONNX ops only (the stock runtime has no training kernels) and return the
 * gradient values. Only nodes on a path from a differentiated value to the loss get gradients, so frozen
 * weights cost nothing and only the activations those gradients read are kept alive.
 *
 * @example
 * ```ts
 * const g = new GraphBuilder("fit");
 * const w = g.input("w", "float32", [3]);
 * const loss = g.op("ReduceSum", [g.op("Mul", [w, w])], { keepdims: 0 });
 * const [dw] = appendBackward(g, loss, [w]); // 2w
 * g.output(dw, "grad.w");
 * ```
 */
import type { GraphBuilder, NodeRec, Value } from "./builder.ts";
import { GRADIENT_RULES, isFloat, sumContributions } from "./grad_rules.ts";

/** Raised when a graph uses an op without a gradient rule on a differentiated path. */
export class NoGradientError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "NoGradientError";
  }
}

/**
 * Appends d(loss)/d(wrt[i]) for each `wrt` value; returns them in order. `seed` (default 1) is the gradient of
 * the loss itself, e.g. a per-run loss scale.
 */
export function appendBackward(
  g: GraphBuilder,
  loss: Value,
  wrt: Value[],
  opts: { seed?: Value } = {},
): Value[] {
  const nodes = [...g.graphNodes];
  const wrtNames = new Set(wrt.map((w) => w.name));
  // Forward: values that depend on something we differentiate.
  const requires = new Set<string>(wrtNames);
  const nodeRequires: boolean[] = nodes.map(() => false);
  nodes.forEach((n, i) => {
    if (n.inputs.some((x) => x && requires.has(x))) {
      nodeRequires[i] = true;
      for (const o of n.outputs) if (isFloat(g.valueOf(o).dtype)) requires.add(o);
    }
  });
  if (!requires.has(loss.name)) {
    throw new NoGradientError(
      `the loss "${loss.name}" does not depend on any of ${[...wrtNames].join(", ")}`,
    );
  }
  // Backward: values whose gradient reaches the loss.
  const needed = new Set<string>([loss.name]);
  for (let i = nodes.length - 1; i >= 0; i--) {
    const n = nodes[i];
    if (!nodeRequires[i] || !n.outputs.some((o) => needed.has(o))) continue;
    for (const x of n.inputs) if (x && requires.has(x)) needed.add(x);
  }

  const contributions = new Map<string, Value[]>();
  const add = (name: string, v: Value) => {
    const list = contributions.get(name);
    if (list) list.push(v);
    else contributions.set(name, [v]);
  };
  return g.scope("backward", () => {
    const seed = opts.seed ??
      g.op("ConstantOfShape", [g.op("Shape", [loss])], { value: { tensor: oneTensor() } });
    add(loss.name, seed);
    for (let i = nodes.length - 1; i >= 0; i--) {
      const n = nodes[i];
      if (!nodeRequires[i] || !n.outputs.some((o) => contributions.has(o))) continue;
      const needs = n.inputs.map((x) => !!x && needed.has(x) && requires.has(x));
      if (!needs.some(Boolean)) continue;
      const gradOutputs = n.outputs.map((o) => {
        const c = contributions.get(o);
        return c ? sumContributions(g, c) : null;
      });
      const rule = n.domain ? undefined : GRADIENT_RULES[n.opType];
      if (!rule) {
        throw new NoGradientError(
          `no gradient rule for op ${n.domain ? n.domain + "." : ""}${n.opType} (node ${n.name})`,
        );
      }
      const grads = g.scope(n.opType, () =>
        rule({
          g,
          node: n,
          inputs: n.inputs.map((x) => (x ? g.valueOf(x) : null)),
          outputs: n.outputs.map((o) => g.valueOf(o)),
          gradOutputs,
          needs,
        }));
      n.inputs.forEach((x, k) => {
        if (needs[k] && grads[k]) add(x, grads[k]!);
      });
    }
    return wrt.map((w) => {
      const c = contributions.get(w.name);
      if (!c) return g.op("ConstantOfShape", [g.op("Shape", [w])], { value: { tensor: zeroTensor() } });
      return sumContributions(g, c);
    });
  });
}

function oneTensor() {
  return { dtype: "float32" as const, dims: [1], data: new Float32Array([1]) };
}

function zeroTensor() {
  return { dtype: "float32" as const, dims: [1], data: new Float32Array([0]) };
}

export type { NodeRec };
