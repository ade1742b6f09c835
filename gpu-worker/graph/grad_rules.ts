/**
 * Gradient rules, one per ONNX op the architectures emit, written in standard ONNX ops. Each rule gets the
 * node, its input and output values and the gradients of its outputs, and returns one gradient per input
 * (null where not needed). Every rule is checked against central finite differences in `grad_rules_test.ts`.
 *
 * Broadcasting: a gradient is summed back to its input's shape (`sumToShape`), statically when shape
 * inference knows the broadcast axes, else with runtime shape ops.
 */
import type { DataType, GraphBuilder, NodeRec, Value } from "./builder.ts";
import type { Shape } from "./shape_inference.ts";

export interface GradContext {
  g: GraphBuilder;
  node: NodeRec;
  inputs: (Value | null)[];
  outputs: Value[];
  /** Gradient of each output (null when an output does not reach the loss). */
  gradOutputs: (Value | null)[];
  /** Whether each input needs a gradient. */
  needs: boolean[];
}

export type GradRule = (c: GradContext) => (Value | null)[];

export function isFloat(dtype: DataType): boolean {
  return dtype === "float32" || dtype === "float16" || dtype === "float64";
}

/** Sum of gradient contributions (one Add, or one Sum for many). */
export function sumContributions(g: GraphBuilder, vs: Value[]): Value {
  if (vs.length === 1) return vs[0];
  if (vs.length === 2) return g.op("Add", vs);
  return g.op("Sum", vs);
}

function rankOf(g: GraphBuilder, v: Value, what: string): number {
  const s = g.shapeOf(v);
  if (!s) {
    throw new Error(`autodiff: the rank of ${what} ("${v.name}") is unknown; give the graph static shapes`);
  }
  return s.length;
}

function numericShape(s: Shape | undefined): number[] | undefined {
  return s && s.every((d) => typeof d === "number") ? s as number[] : undefined;
}

/** A tensor holding v's shape: a constant when static, else Shape(v). */
export function shapeTensor(g: GraphBuilder, v: Value): Value {
  const s = numericShape(g.shapeOf(v));
  return s ? g.ints(s) : g.op("Shape", [v]);
}

function zerosLike(g: GraphBuilder, v: Value): Value {
  return g.op("ConstantOfShape", [shapeTensor(g, v)], {
    value: { tensor: { dtype: "float32", dims: [1], data: new Float32Array([0]) } },
  });
}

/** Sums `grad` (the shape of a broadcast result) back to the shape of `like`. */
export function sumToShape(g: GraphBuilder, grad: Value, like: Value): Value {
  const gs = g.shapeOf(grad), xs = g.shapeOf(like);
  if (gs && xs) {
    if (gs.length === xs.length && gs.every((d, i) => d !== null && d === xs[i])) return grad;
    const d = gs.length - xs.length;
    if (d >= 0) {
      const axes: number[] = [];
      let decidable = true;
      for (let i = 0; i < gs.length; i++) {
        if (i < d) {
          axes.push(i);
          continue;
        }
        const xd = xs[i - d], gd = gs[i];
        if (xd === gd && xd !== null) continue;
        if (xd === 1 && gd !== null) axes.push(i);
        else if (xd === 1 && gd === null) axes.push(i); // reducing a dim that is already 1 is harmless
        else decidable = false;
      }
      if (decidable) {
        let r = axes.length ? g.op("ReduceSum", [grad, g.ints(axes)], { keepdims: 1 }) : grad;
        if (d > 0) r = g.op("Reshape", [r, shapeTensor(g, like)]);
        return r;
      }
    }
  }
  // Runtime fallback: reduce the axes where `like` (left-padded with 1s) is 1 and the gradient is not.
  const gShape = g.op("Shape", [grad]);
  const xShape = g.op("Shape", [like]);
  const rankDiff = g.op("Sub", [g.op("Size", [gShape]), g.op("Size", [xShape])]);
  const ones = g.op("ConstantOfShape", [g.op("Reshape", [rankDiff, g.ints([1])])], {
    value: { tensor: { dtype: "int64", dims: [1], data: new BigInt64Array([1n]) } },
  });
  const padded = g.op("Concat", [ones, xShape], { axis: 0 });
  const one = g.constant([1], [], "int64");
  const mask = g.op("And", [g.op("Equal", [padded, one]), g.op("Not", [g.op("Equal", [gShape, one])])]);
  const axes = g.op("Reshape", [g.op("NonZero", [mask]), g.ints([-1])]);
  const reduced = g.op("ReduceSum", [grad, axes], { keepdims: 1, noop_with_empty_axes: 1 });
  return g.op("Reshape", [reduced, xShape]);
}

/** Transposes the last two axes. */
function transposeLast2(g: GraphBuilder, v: Value, rank: number): Value {
  const perm = [...Array(rank).keys()];
  [perm[rank - 2], perm[rank - 1]] = [perm[rank - 1], perm[rank - 2]];
  return g.op("Transpose", [v], { perm });
}

function constantValue(g: GraphBuilder, v: Value | null): number | undefined {
  if (!v) return undefined;
  const vals = g.valuesOf(v);
  return vals && vals.length === 1 && typeof vals[0] === "number" ? vals[0] : undefined;
}

/** A float attribute given as a plain number or as `{ float }` (the builder accepts both). */
function attrFloat(n: NodeRec, name: string, fallback: number): number {
  const a = n.attrs[name];
  if (typeof a === "number") return a;
  if (a && typeof a === "object" && "float" in a) return a.float;
  return fallback;
}

function attrInts(n: NodeRec, name: string): number[] | undefined {
  const a = n.attrs[name];
  return Array.isArray(a) ? a as number[] : undefined;
}

/** Normalization backward: gx = rstd * (gh - mean(gh) - xhat * mean(gh * xhat)) over `axes`. */
function normalizeBackward(g: GraphBuilder, x: Value, gh: Value, axes: number[], eps: number) {
  const mean = (v: Value) => g.op("ReduceMean", [v], { axes, keepdims: 1 });
  const xc = g.op("Sub", [x, mean(x)]);
  const variance = mean(g.op("Mul", [xc, xc]));
  const rstd = g.op("Reciprocal", [g.op("Sqrt", [g.op("Add", [variance, g.scalar(eps)])])]);
  const xhat = g.op("Mul", [xc, rstd]);
  const inner = g.op("Sub", [
    g.op("Sub", [gh, mean(gh)]),
    g.op("Mul", [xhat, mean(g.op("Mul", [gh, xhat]))]),
  ]);
  return { gx: g.op("Mul", [inner, rstd]), xhat };
}

const unaryRule = (f: (g: GraphBuilder, x: Value, y: Value, gy: Value) => Value): GradRule => (c) => [
  f(c.g, c.inputs[0]!, c.outputs[0], c.gradOutputs[0]!),
];

export const GRADIENT_RULES: Record<string, GradRule> = {
  Identity: (c) => [c.gradOutputs[0]],
  Add: ({ g, inputs: [a, b], gradOutputs: [gy], needs }) => [
    needs[0] ? sumToShape(g, gy!, a!) : null,
    needs[1] ? sumToShape(g, gy!, b!) : null,
  ],
  Sub: ({ g, inputs: [a, b], gradOutputs: [gy], needs }) => [
    needs[0] ? sumToShape(g, gy!, a!) : null,
    needs[1] ? sumToShape(g, g.op("Neg", [gy!]), b!) : null,
  ],
  Mul: ({ g, inputs: [a, b], gradOutputs: [gy], needs }) => [
    needs[0] ? sumToShape(g, g.op("Mul", [gy!, b!]), a!) : null,
    needs[1] ? sumToShape(g, g.op("Mul", [gy!, a!]), b!) : null,
  ],
  Div: ({ g, inputs: [a, b], outputs: [y], gradOutputs: [gy], needs }) => [
    needs[0] ? sumToShape(g, g.op("Div", [gy!, b!]), a!) : null,
    needs[1] ? sumToShape(g, g.op("Neg", [g.op("Div", [g.op("Mul", [gy!, y]), b!])]), b!) : null,
  ],
  Neg: unaryRule((g, _x, _y, gy) => g.op("Neg", [gy])),
  Sqrt: unaryRule((g, _x, y, gy) => g.op("Div", [g.op("Mul", [gy, g.scalar(0.5)]), y])),
  Exp: unaryRule((g, _x, y, gy) => g.op("Mul", [gy, y])),
  Log: unaryRule((g, x, _y, gy) => g.op("Div", [gy, x])),
  Reciprocal: unaryRule((g, _x, y, gy) => g.op("Neg", [g.op("Mul", [gy, g.op("Mul", [y, y])])])),
  Sigmoid: unaryRule((g, _x, y, gy) => g.op("Mul", [gy, g.op("Mul", [y, g.op("Sub", [g.scalar(1), y])])])),
  Tanh: unaryRule((g, _x, y, gy) => g.op("Mul", [gy, g.op("Sub", [g.scalar(1), g.op("Mul", [y, y])])])),
  Relu: unaryRule((g, x, _y, gy) =>
    g.op("Mul", [gy, g.op("Cast", [g.op("Greater", [x, g.scalar(0)])], { to: 1 })])
  ),
  Abs: unaryRule((g, x, _y, gy) => g.op("Mul", [gy, g.op("Sign", [x])])),
  Erf: unaryRule((g, x, _y, gy) =>
    g.op("Mul", [
      gy,
      g.op("Mul", [g.scalar(2 / Math.sqrt(Math.PI)), g.op("Exp", [g.op("Neg", [g.op("Mul", [x, x])])])]),
    ])
  ),
  Sin: unaryRule((g, x, _y, gy) => g.op("Mul", [gy, g.op("Cos", [x])])),
  Cos: unaryRule((g, x, _y, gy) => g.op("Neg", [g.op("Mul", [gy, g.op("Sin", [x])])])),
  Pow: ({ g, node, inputs: [x, p], gradOutputs: [gy], needs }) => {
    if (needs[1]) throw new Error(`autodiff: Pow ${node.name}: the exponent must be a constant`);
    const e = constantValue(g, p);
    if (e === undefined) throw new Error(`autodiff: Pow ${node.name}: the exponent must be a known scalar`);
    const d = e === 2
      ? g.op("Mul", [x!, g.scalar(2)])
      : g.op("Mul", [g.op("Pow", [x!, g.scalar(e - 1)]), g.scalar(e)]);
    return [g.op("Mul", [gy!, d]), null];
  },
  Cast: ({ g, inputs: [x], gradOutputs: [gy] }) => [
    isFloat(x!.dtype)
      ? g.op("Cast", [gy!], { to: x!.dtype === "float16" ? 10 : x!.dtype === "float64" ? 11 : 1 })
      : null,
  ],
  Clip: ({ g, inputs: [x, lo, hi], gradOutputs: [gy] }) => {
    let inside: Value | null = null;
    if (lo) inside = g.op("GreaterOrEqual", [x!, lo]);
    if (hi) {
      const below = g.op("LessOrEqual", [x!, hi]);
      inside = inside ? g.op("And", [inside, below]) : below;
    }
    return [inside ? g.op("Mul", [gy!, g.op("Cast", [inside], { to: 1 })]) : gy, null, null];
  },
  Where: ({ g, inputs: [cond, a, b], gradOutputs: [gy], needs }) => {
    const zero = g.scalar(0);
    return [
      null,
      needs[1] ? sumToShape(g, g.op("Where", [cond!, gy!, zero]), a!) : null,
      needs[2] ? sumToShape(g, g.op("Where", [cond!, zero, gy!]), b!) : null,
    ];
  },
  MatMul: ({ g, node, inputs: [a, b], gradOutputs: [gy], needs }) => {
    const ra = rankOf(g, a!, `MatMul ${node.name} input A`),
      rb = rankOf(g, b!, `MatMul ${node.name} input B`);
    if (ra < 2 || rb < 2) throw new Error(`autodiff: MatMul ${node.name}: 1-D operands are not supported`);
    return [
      needs[0] ? sumToShape(g, g.op("MatMul", [gy!, transposeLast2(g, b!, rb)]), a!) : null,
      needs[1] ? sumToShape(g, g.op("MatMul", [transposeLast2(g, a!, ra), gy!]), b!) : null,
    ];
  },
  Transpose: ({ g, node, inputs: [x], gradOutputs: [gy] }) => {
    const perm = attrInts(node, "perm") ?? [...Array(rankOf(g, x!, "Transpose input")).keys()].reverse();
    const inv = perm.map((_, i) => perm.indexOf(i));
    return [g.op("Transpose", [gy!], { perm: inv })];
  },
  Reshape: ({ g, inputs: [x], gradOutputs: [gy] }) => [g.op("Reshape", [gy!, shapeTensor(g, x!)]), null],
  Unsqueeze: ({ g, inputs: [x], gradOutputs: [gy] }) => [g.op("Reshape", [gy!, shapeTensor(g, x!)]), null],
  Squeeze: ({ g, inputs: [x], gradOutputs: [gy] }) => [g.op("Reshape", [gy!, shapeTensor(g, x!)]), null],
  Flatten: ({ g, inputs: [x], gradOutputs: [gy] }) => [g.op("Reshape", [gy!, shapeTensor(g, x!)])],
  Expand: ({ g, inputs: [x], gradOutputs: [gy] }) => [sumToShape(g, gy!, x!), null],
  Concat: ({ g, node, inputs, gradOutputs: [gy], needs }) => {
    const rank = rankOf(g, inputs[0]!, `Concat ${node.name} input`);
    const axis = ((node.attrs.axis as number) + rank) % rank;
    const sizes = inputs.map((x) => g.shapeOf(x!)?.[axis]);
    if (sizes.every((s) => typeof s === "number")) {
      const parts = g.opN("Split", [gy!, g.ints(sizes as number[])], { axis }, inputs.length);
      return parts.map((p, i) => (needs[i] ? p : null));
    }
    // Runtime sizes: slice each part at offsets read from the inputs' shapes.
    let offset: Value = g.ints([0]);
    return inputs.map((x, i) => {
      const size = g.op("Gather", [g.op("Shape", [x!]), g.ints([axis])], { axis: 0 });
      const end = g.op("Add", [offset, size]);
      const part = needs[i] ? g.op("Slice", [gy!, offset, end, g.ints([axis])]) : null;
      offset = end;
      return part;
    });
  },
  Split: ({ g, node, inputs: [x], outputs, gradOutputs }) => {
    const rank = rankOf(g, x!, `Split ${node.name} input`);
    const axis = (((node.attrs.axis as number) ?? 0) + rank) % rank;
    const parts = gradOutputs.map((gy, i) => gy ?? zerosLike(g, outputs[i]));
    return [g.op("Concat", parts, { axis }), null];
  },
  Slice: ({ g, node, inputs: [x, starts, ends, axesV, stepsV], gradOutputs: [gy] }) => {
    const xs = numericShape(g.shapeOf(x!));
    const st = g.valuesOf(starts!), en = g.valuesOf(ends!);
    const axes = axesV ? g.valuesOf(axesV) : st?.map((_, i) => i);
    const steps = stepsV ? g.valuesOf(stepsV) : st?.map(() => 1);
    const known = [st, en, axes, steps].every((v) => v && v.every((d) => typeof d === "number"));
    if (!xs || !known || (steps as number[]).some((s) => s !== 1)) {
      throw new Error(`autodiff: Slice ${node.name} needs static shapes, starts and ends, and step 1`);
    }
    const pads = new Array(2 * xs.length).fill(0);
    (axes as number[]).forEach((a, i) => {
      const ax = (a + xs.length) % xs.length;
      const d = xs[ax];
      const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + d : v, 0), d);
      const s = clamp(st![i] as number), e = clamp(en![i] as number);
      pads[ax] = s;
      pads[ax + xs.length] = d - e;
    });
    return [g.op("Pad", [gy!, g.ints(pads)]), null, null, null, null];
  },
  Gather: ({ g, node, inputs: [data, idx], gradOutputs: [gy] }) => {
    const axis = (node.attrs.axis as number) ?? 0;
    if (axis !== 0) {
      throw new Error(`autodiff: Gather ${node.name}: only axis 0 (embedding lookups) is differentiable`);
    }
    const scatterIdx = g.op("Unsqueeze", [idx!, g.ints([-1])]);
    return [g.op("ScatterND", [zerosLike(g, data!), scatterIdx, gy!], { reduction: "add" }), null];
  },
  Softmax: ({ g, node, outputs: [y], gradOutputs: [gy] }) => {
    const axis = (node.attrs.axis as number) ?? -1;
    const dot = g.op("ReduceSum", [g.op("Mul", [gy!, y]), g.ints([axis])], { keepdims: 1 });
    return [g.op("Mul", [y, g.op("Sub", [gy!, dot])])];
  },
  LayerNormalization: ({ g, node, inputs: [x, gamma, beta], gradOutputs: [gy], needs }) => {
    const rank = rankOf(g, x!, `LayerNormalization ${node.name} input`);
    const axis = (((node.attrs.axis as number) ?? -1) + rank) % rank;
    const axes = [...Array(rank - axis).keys()].map((i) => axis + i);
    const eps = attrFloat(node, "epsilon", 1e-5);
    const gh = g.op("Mul", [gy!, gamma!]);
    const { gx, xhat } = normalizeBackward(g, x!, gh, axes, eps);
    return [
      needs[0] ? gx : null,
      needs[1] ? sumToShape(g, g.op("Mul", [gy!, xhat]), gamma!) : null,
      needs[2] && beta ? sumToShape(g, gy!, beta) : null,
    ];
  },
  InstanceNormalization: ({ g, node, inputs: [x, scale], gradOutputs: [gy], needs }) => {
    const rank = rankOf(g, x!, `InstanceNormalization ${node.name} input`);
    const axes = [...Array(rank - 2).keys()].map((i) => i + 2);
    const eps = attrFloat(node, "epsilon", 1e-5);
    const bshape = g.ints([-1, ...Array(rank - 2).fill(1)]);
    const s = g.op("Reshape", [scale!, bshape]);
    const { gx, xhat } = normalizeBackward(g, x!, g.op("Mul", [gy!, s]), axes, eps);
    const reduceAxes = () => g.ints([0, ...axes]);
    return [
      needs[0] ? gx : null,
      needs[1] ? g.op("ReduceSum", [g.op("Mul", [gy!, xhat]), reduceAxes()], { keepdims: 0 }) : null,
      needs[2] ? g.op("ReduceSum", [gy!, reduceAxes()], { keepdims: 0 }) : null,
    ];
  },
  Conv: ({ g, node, inputs: [x, w], gradOutputs: [gy], needs }) => {
    const group = (node.attrs.group as number) ?? 1;
    const strides = attrInts(node, "strides") ?? [1, 1];
    const pads = attrInts(node, "pads") ?? [0, 0, 0, 0];
    if (attrInts(node, "dilations")?.some((d) => d !== 1)) {
      throw new Error(`autodiff: Conv ${node.name}: dilation is not supported`);
    }
    const ws = numericShape(g.shapeOf(w!));
    if (!ws) throw new Error(`autodiff: Conv ${node.name}: the weight shape must be static`);
    const k = ws.slice(2);
    let gx: Value | null = null;
    if (needs[0]) {
      const xs = g.shapeOf(x!), ys = g.shapeOf(gy!);
      const outPad = k.map((kk, i) => {
        const xd = xs?.[2 + i], yd = ys?.[2 + i];
        if (typeof xd === "number" && typeof yd === "number") {
          return xd - ((yd - 1) * strides[i] - pads[i] - pads[i + 2] + kk);
        }
        if (strides[i] === 1) return 0;
        throw new Error(`autodiff: Conv ${node.name}: strided convolution needs static spatial sizes`);
      });
      const same = strides.every((st) => st === 1) && group === 1 &&
        k.every((kk, i) => pads[i] <= kk - 1 && pads[i + 2] <= kk - 1);
      // A stride-1 convolution's input gradient is a convolution with the flipped, transposed kernel: ONNX
      // Runtime's Conv runs it 1.5-2x faster than ConvTranspose on CPU (measured at the tiny UNet's shapes).
      gx = same
        ? g.op("Conv", [gy!, flippedTransposedKernel(g, w!, k)], {
          pads: [k[0] - 1 - pads[0], k[1] - 1 - pads[1], k[0] - 1 - pads[2], k[1] - 1 - pads[3]],
        })
        : g.op("ConvTranspose", [gy!, w!], { strides, pads, group, output_padding: outPad });
    }
    let gw: Value | null = null;
    if (needs[1]) {
      if (group !== 1) {
        throw new Error(
          `autodiff: Conv ${node.name}: weight gradients of grouped convolutions are not supported`,
        );
      }
      gw = convWeightGrad(g, x!, gy!, ws, strides, pads);
    }
    const gb = needs[2] ? g.op("ReduceSum", [gy!, g.ints([0, 2, 3])], { keepdims: 0 }) : null;
    return [gx, gw, gb];
  },
  Resize: ({ g, node, inputs: [, , scales], gradOutputs: [gy] }) => {
    const s = g.valuesOf(scales!);
    if (node.attrs.mode !== "nearest" || !s || s.join() !== "1,1,2,2") {
      throw new Error(`autodiff: Resize ${node.name}: only nearest 2x upsampling is differentiable`);
    }
    const pooled = g.op("AveragePool", [gy!], { kernel_shape: [2, 2], strides: [2, 2] });
    return [g.op("Mul", [pooled, g.scalar(4)]), null, null];
  },
  ReduceSum: ({ g, node, inputs: [x, axesV], gradOutputs: [gy] }) => {
    const keep = (node.attrs.keepdims as number) ?? 1;
    let gyk = gy!;
    // Reducing every axis leaves a scalar (or all-ones shape) that Expand broadcasts without knowing the rank.
    if (!keep && axesV) {
      const rank = rankOf(g, x!, `ReduceSum ${node.name} input`);
      const axes = g.valuesOf(axesV) as number[] | undefined;
      if (!axes) throw new Error(`autodiff: ReduceSum ${node.name}: axes must be constant`);
      gyk = g.op("Unsqueeze", [gy!, g.ints(axes.map((a) => (a + rank) % rank))]);
    }
    return [g.op("Expand", [gyk, shapeTensor(g, x!)]), null];
  },
  ReduceMean: ({ g, node, inputs: [x], gradOutputs: [gy] }) => {
    const keep = (node.attrs.keepdims as number) ?? 1;
    const xs = numericShape(g.shapeOf(x!));
    const axesAttr = attrInts(node, "axes");
    let gyk = gy!, count: Value;
    if (!axesAttr) {
      // Every axis: no rank needed (the gradient is a scalar or all-ones shape that Expand broadcasts).
      count = xs ? g.scalar(xs.reduce((p, d) => p * d, 1)) : g.op("Cast", [g.op("Size", [x!])], { to: 1 });
    } else {
      const rank = rankOf(g, x!, `ReduceMean ${node.name} input`);
      const axes = axesAttr.map((a) => (a + rank) % rank);
      if (!keep) gyk = g.op("Unsqueeze", [gy!, g.ints(axes)]);
      if (xs) count = g.scalar(axes.reduce((p, a) => p * xs[a], 1));
      else {
        const dims = g.op("Gather", [g.op("Shape", [x!]), g.ints(axes)], { axis: 0 });
        count = g.op("Cast", [g.op("ReduceProd", [dims], { keepdims: 0 })], { to: 1 });
      }
    }
    return [g.op("Div", [g.op("Expand", [gyk, shapeTensor(g, x!)]), count])];
  },
};

/** W[co, ci, i, j] -> W'[ci, co, kh-1-i, kw-1-j]: the kernel of a stride-1 convolution's input gradient. */
function flippedTransposedKernel(g: GraphBuilder, w: Value, k: number[]): Value {
  const flipped = k.some((kk) => kk > 1)
    ? g.op("Slice", [w, g.ints([-1, -1]), g.ints([-k[0] - 1, -k[1] - 1]), g.ints([2, 3]), g.ints([-1, -1])])
    : w;
  return g.op("Transpose", [flipped], { perm: [1, 0, 2, 3] });
}

/**
 * dW[co, ci, i, j] = sum over n and output pixels of dY[n, co, p] * patch[n, ci, i, j, p], as one batched
 * MatMul against the input's patches (im2col). The patches come from a depthwise convolution with one-hot
 * kernels (same strides and pads as the forward convolution), so every geometry lines up with dY; a 1x1,
 * stride-1, unpadded convolution uses the input itself. Measured 1.5-4x faster with ONNX Runtime on CPU than
 * convolving the input (batch as channels) with dY as the kernel, and faster than patches from Pad + Slice.
 * The patches hold kh*kw copies of the input: fine for UNet-sized activations.
 */
function convWeightGrad(
  g: GraphBuilder,
  x: Value,
  gy: Value,
  ws: number[],
  strides: number[],
  pads: number[],
) {
  const [cout, cin, kh, kw] = ws;
  const kk = kh * kw;
  let patches = x;
  if (kk > 1 || strides.some((st) => st !== 1) || pads.some((p) => p !== 0)) {
    const onehot = new Float32Array(cin * kk * kk);
    for (let c = 0; c < cin; c++) for (let q = 0; q < kk; q++) onehot[(c * kk + q) * kk + q] = 1;
    patches = g.op("Conv", [x, g.constant(onehot, [cin * kk, 1, kh, kw])], { strides, pads, group: cin });
  }
  const p = g.op("Reshape", [patches, g.ints([0, cin * kk, -1])]);
  const dy = g.op("Reshape", [gy, g.ints([0, cout, -1])]);
  const perSample = g.op("MatMul", [dy, g.op("Transpose", [p], { perm: [0, 2, 1] })]);
  return g.op("Reshape", [g.op("ReduceSum", [perSample, g.ints([0])], { keepdims: 0 }), g.ints(ws)]);
}
