/**
 * Static shape inference for the ops the builder emits, with symbolic dims ("batch", "height") and `null` for
 * a dim nobody can know before running. Small int64 vectors whose values are known (the output of Shape, of
 * constants, of Concat/Gather on those) are tracked too, so `Reshape(x, Shape(y))` has a known shape.
 *
 * The autodiff needs ranks everywhere and exact dims where broadcasting happened; an op it cannot infer
 * gets `undefined` and the autodiff falls back to runtime shape ops.
 */
import type { AttrValue } from "./builder.ts";

/** A dim: a number, a symbol, or null (unknown). */
export type SDim = number | string | null;
export type Shape = SDim[];

export interface InferInput {
  shape?: Shape;
  /** Known values of a small int64 vector or scalar. */
  values?: SDim[];
}

export interface InferResult {
  shapes: (Shape | undefined)[];
  values?: (SDim[] | undefined)[];
}

const UNARY = new Set([
  "Identity",
  "Sigmoid",
  "Tanh",
  "Erf",
  "Sin",
  "Cos",
  "Neg",
  "Sqrt",
  "Exp",
  "Log",
  "Relu",
  "Abs",
  "Cast",
  "Softmax",
  "LayerNormalization",
  "InstanceNormalization",
  "Clip",
  "Not",
  "Reciprocal",
  "Dropout",
  "Sign",
  "Sign",
]);
const BROADCAST = new Set([
  "Add",
  "Sub",
  "Mul",
  "Div",
  "Pow",
  "Sum",
  "LessOrEqual",
  "GreaterOrEqual",
  "Equal",
  "Less",
  "Greater",
  "And",
  "Or",
  "Max",
  "Min",
  "Where",
]);

/** numpy broadcasting of static shapes; null where undecidable. */
export function broadcastShapes(shapes: Shape[]): Shape {
  const rank = Math.max(...shapes.map((s) => s.length));
  const out: Shape = [];
  for (let i = 0; i < rank; i++) {
    let d: SDim = 1;
    for (const s of shapes) {
      const j = s.length - rank + i;
      const e = j < 0 ? 1 : s[j];
      if (e === 1) continue;
      if (d === 1) d = e;
      else if (d !== e) d = null;
    }
    out.push(d);
  }
  return out;
}

function ints(a: AttrValue | undefined): number[] | undefined {
  return Array.isArray(a) ? a as number[] : undefined;
}

function normAxis(axis: number, rank: number): number {
  return axis < 0 ? axis + rank : axis;
}

function prod(dims: SDim[]): number | null {
  let p = 1;
  for (const d of dims) {
    if (typeof d !== "number") return null;
    p *= d;
  }
  return p;
}

function numericValues(v?: SDim[]): number[] | undefined {
  return v && v.every((x) => typeof x === "number") ? v as number[] : undefined;
}

function sliceDim(d: SDim, start: number, end: number, step: number): SDim {
  if (typeof d !== "number") return start === 0 && end >= 2 ** 31 - 1 && step === 1 ? d : null;
  const clamp = (x: number) => Math.min(Math.max(x < 0 ? x + d : x, 0), d);
  const s = clamp(start), e = clamp(end);
  return step > 0 ? Math.max(0, Math.ceil((e - s) / step)) : null;
}

/** Infers output shapes (and known int values) of one node. */
export function inferShapes(
  opType: string,
  inputs: (InferInput | null)[],
  attrs: Record<string, AttrValue>,
  nOut: number,
): InferResult {
  const s0 = inputs[0]?.shape;
  const none: InferResult = { shapes: Array(nOut).fill(undefined) };
  if (UNARY.has(opType)) return { shapes: [s0 ? [...s0] : undefined] };
  if (BROADCAST.has(opType)) {
    const shapes = inputs.map((i) => i?.shape);
    if (shapes.some((s) => !s)) return none;
    const out = broadcastShapes(shapes as Shape[]);
    // Arithmetic on known int vectors (shape computations) keeps values where cheap.
    if (opType === "Mul" || opType === "Add" || opType === "Sub" || opType === "Div") {
      const a = numericValues(inputs[0]?.values), b = numericValues(inputs[1]?.values);
      if (a && b && (a.length === b.length || b.length === 1 || a.length === 1)) {
        const n = Math.max(a.length, b.length);
        const vals = Array.from({ length: n }, (_, i) => {
          const x = a[a.length === 1 ? 0 : i], y = b[b.length === 1 ? 0 : i];
          return opType === "Mul"
            ? x * y
            : opType === "Add"
            ? x + y
            : opType === "Sub"
            ? x - y
            : Number.isInteger(x) && Number.isInteger(y)
            ? Math.trunc(x / y)
            : x / y;
        });
        return { shapes: [out], values: [vals] };
      }
    }
    return { shapes: [out] };
  }
  switch (opType) {
    case "MatMul": {
      const a = s0, b = inputs[1]?.shape;
      if (!a || !b || a.length < 2 || b.length < 1) return none;
      if (b.length === 1) return { shapes: [a.slice(0, -1)] };
      const batch = broadcastShapes([a.slice(0, -2), b.slice(0, -2)]);
      return { shapes: [[...batch, a[a.length - 2], b[b.length - 1]]] };
    }
    case "Transpose": {
      if (!s0) return none;
      const perm = ints(attrs.perm) ?? s0.map((_, i) => s0.length - 1 - i);
      return { shapes: [perm.map((p) => s0[p])] };
    }
    case "Shape": {
      if (!s0) return none;
      const r = s0.length;
      const start = normAxis((attrs.start as number) ?? 0, r);
      const end = attrs.end === undefined ? r : normAxis(attrs.end as number, r);
      const vals = s0.slice(Math.max(0, start), Math.min(r, end));
      return { shapes: [[vals.length]], values: [vals] };
    }
    case "Size":
      return { shapes: [[]], values: [s0 ? [prod(s0)] : undefined] };
    case "Reshape": {
      const target = inputs[1]?.values;
      if (!target) {
        return {
          shapes: [
            inputs[1]?.shape?.[0] != null ? Array(inputs[1]!.shape![0] as number).fill(null) : undefined,
          ],
        };
      }
      const out: Shape = target.map((t, i) => (t === 0 ? (s0 ? s0[i] : null) : t));
      const neg = out.indexOf(-1);
      if (neg >= 0) {
        const total = s0 ? prod(s0) : null;
        const rest = prod(out.filter((_, i) => i !== neg));
        out[neg] = total !== null && rest !== null && rest !== 0 ? total / rest : null;
        // A -1 that absorbs exactly one symbolic dim of the input keeps that symbol.
        if (out[neg] === null && s0) {
          const sym = s0.filter((d) => typeof d === "string");
          const known = s0.filter((d) => typeof d === "number") as number[];
          const restKnown = out.filter((d, i) => i !== neg && typeof d === "number") as number[];
          const restSyms = out.filter((d, i) => i !== neg && typeof d === "string");
          const leftover = sym.filter((d) => !restSyms.includes(d));
          const ratio = known.reduce((a, b) => a * b, 1) / restKnown.reduce((a, b) => a * b, 1);
          if (leftover.length === 1 && ratio === 1 && !s0.includes(null)) out[neg] = leftover[0];
        }
      }
      return { shapes: [out], values: inputs[0]?.values ? [inputs[0].values] : undefined };
    }
    case "Conv":
    case "AveragePool":
    case "MaxPool": {
      if (!s0) return none;
      const w = inputs[1]?.shape;
      const kernel = opType === "Conv" ? (w ? w.slice(2) as SDim[] : null) : ints(attrs.kernel_shape) ?? null;
      if (!kernel) return none;
      const nsp = s0.length - 2;
      const strides = ints(attrs.strides) ?? Array(nsp).fill(1);
      const pads = ints(attrs.pads) ?? Array(2 * nsp).fill(0);
      const dil = ints(attrs.dilations) ?? Array(nsp).fill(1);
      const spatial = s0.slice(2).map((d, i) => {
        const k = kernel[i];
        if (typeof k !== "number") return null;
        const ek = (k - 1) * dil[i] + 1;
        const pad = pads[i] + pads[i + nsp];
        if (typeof d === "number") return Math.floor((d + pad - ek) / strides[i]) + 1;
        return strides[i] === 1 && pad === ek - 1 ? d : null;
      });
      const c = opType === "Conv" ? (w ? w[0] : null) : s0[1];
      return { shapes: [[s0[0], c, ...spatial]] };
    }
    case "ConvTranspose": {
      const w = inputs[1]?.shape;
      if (!s0 || !w) return none;
      const nsp = s0.length - 2;
      const strides = ints(attrs.strides) ?? Array(nsp).fill(1);
      const pads = ints(attrs.pads) ?? Array(2 * nsp).fill(0);
      const outPad = ints(attrs.output_padding) ?? Array(nsp).fill(0);
      const group = (attrs.group as number) ?? 1;
      const spatial = s0.slice(2).map((d, i) => {
        const k = w[2 + i];
        if (typeof d !== "number" || typeof k !== "number") return null;
        return (d - 1) * strides[i] - pads[i] - pads[i + nsp] + k + outPad[i];
      });
      return { shapes: [[s0[0], typeof w[1] === "number" ? w[1] * group : null, ...spatial]] };
    }
    case "Resize": {
      const scales = numericValues(inputs[2]?.values);
      if (!s0 || !scales) return none;
      return {
        shapes: [
          s0.map((d, i) => (typeof d === "number" ? Math.floor(d * scales[i]) : scales[i] === 1 ? d : null)),
        ],
      };
    }
    case "Concat": {
      const shapes = inputs.map((i) => i?.shape);
      const vals = inputs.map((i) => i?.values);
      const values = vals.every((v) => v) ? [vals.flat() as SDim[]] : undefined;
      if (shapes.some((s) => !s)) return { shapes: [undefined], values };
      const axis = normAxis(attrs.axis as number, shapes[0]!.length);
      const out = [...shapes[0]!];
      let total: SDim = 0;
      for (const s of shapes) {
        const d = s![axis];
        total = typeof total === "number" && typeof d === "number" ? total + d : null;
      }
      out[axis] = total;
      return { shapes: [out], values };
    }
    case "Split": {
      if (!s0) return none;
      const axis = normAxis((attrs.axis as number) ?? 0, s0.length);
      const sizes = numericValues(inputs[1]?.values);
      return {
        shapes: Array.from({ length: nOut }, (_, i) => {
          const o = [...s0];
          const d = s0[axis];
          o[axis] = sizes ? sizes[i] : typeof d === "number" ? d / nOut : null;
          return o;
        }),
      };
    }
    case "Slice": {
      if (!s0) return none;
      const starts = numericValues(inputs[1]?.values), endsRaw = inputs[2]?.values;
      const ends = numericValues(endsRaw);
      // Slicing [0, n) with n a symbol (a length read off another tensor) yields that symbol.
      const symbolicEnd = starts && endsRaw && endsRaw.length === starts.length && !ends
        ? endsRaw
        : undefined;
      const axes = numericValues(inputs[3]?.values) ?? starts?.map((_, i) => i);
      const steps = numericValues(inputs[4]?.values) ?? starts?.map(() => 1);
      const out = [...s0];
      if (!axes) return { shapes: [s0.map(() => null)] };
      axes.forEach((a, i) => {
        const ax = normAxis(a, s0.length);
        if (starts && ends) out[ax] = sliceDim(s0[ax], starts[i], ends[i], steps![i]);
        else if (symbolicEnd && starts![i] === 0 && steps![i] === 1 && typeof symbolicEnd[i] === "string") {
          out[ax] = symbolicEnd[i];
        } else out[ax] = null;
      });
      const v = inputs[0]?.values;
      let values: (SDim[] | undefined)[] | undefined;
      if (v && starts && ends && s0.length === 1) {
        values = [
          v.slice(
            starts[0] < 0 ? starts[0] + v.length : starts[0],
            ends[0] < 0 ? ends[0] + v.length : ends[0],
          ),
        ];
      }
      return { shapes: [out], values };
    }
    case "Gather": {
      const idx = inputs[1]?.shape;
      if (!s0 || !idx) return none;
      const axis = normAxis((attrs.axis as number) ?? 0, s0.length);
      const out = [...s0.slice(0, axis), ...idx, ...s0.slice(axis + 1)];
      const v = inputs[0]?.values, iv = numericValues(inputs[1]?.values);
      const values = v && iv && axis === 0 ? [iv.map((i) => v[i < 0 ? i + v.length : i])] : undefined;
      return { shapes: [out], values };
    }
    case "Flatten": {
      if (!s0) return none;
      const axis = normAxis((attrs.axis as number) ?? 1, s0.length);
      // A product keeps a lone symbolic dim ([b, 3, 4] -> [b, 12]).
      const flat = (ds: SDim[]): SDim => {
        const big = ds.filter((d) => d !== 1);
        return big.length === 1 ? big[0] : prod(ds);
      };
      return { shapes: [[flat(s0.slice(0, axis)), flat(s0.slice(axis))]] };
    }
    case "GatherElements":
      return { shapes: [inputs[1]?.shape ? [...inputs[1]!.shape!] : undefined] };
    case "Unsqueeze": {
      const axes = numericValues(inputs[1]?.values);
      if (!s0 || !axes) return none;
      const rank = s0.length + axes.length;
      const norm = axes.map((a) => normAxis(a, rank)).sort((a, b) => a - b);
      const out: Shape = [];
      let j = 0;
      for (let i = 0; i < rank; i++) out.push(norm.includes(i) ? 1 : s0[j++]);
      return { shapes: [out], values: inputs[0]?.values ? [inputs[0].values] : undefined };
    }
    case "Squeeze": {
      if (!s0) return none;
      const axes = numericValues(inputs[1]?.values)?.map((a) => normAxis(a, s0.length));
      const out = s0.filter((d, i) => (axes ? !axes.includes(i) : d !== 1));
      return { shapes: [out], values: inputs[0]?.values ? [inputs[0].values] : undefined };
    }
    case "ReduceSum":
    case "ReduceMean":
    case "ReduceMax": {
      if (!s0) return none;
      const axesIn = opType === "ReduceSum" || inputs[1]
        ? numericValues(inputs[1]?.values)
        : ints(attrs.axes);
      const keep = (attrs.keepdims as number) ?? 1;
      const axes = (axesIn ?? (inputs[1] ? undefined : s0.map((_, i) => i)))?.map((a) =>
        normAxis(a, s0.length)
      );
      if (!axes) return none;
      const out = keep
        ? s0.map((d, i) => (axes.includes(i) ? 1 : d))
        : s0.filter((_, i) => !axes.includes(i));
      return { shapes: [out] };
    }
    case "Expand": {
      const target = inputs[1]?.values;
      if (!s0 || !target) return none;
      return { shapes: [broadcastShapes([s0, target])] };
    }
    case "ArgMax": {
      if (!s0) return none;
      const axis = normAxis((attrs.axis as number) ?? 0, s0.length);
      const keep = (attrs.keepdims as number) ?? 1;
      return { shapes: [keep ? s0.map((d, i) => (i === axis ? 1 : d)) : s0.filter((_, i) => i !== axis)] };
    }
    case "Range":
      return { shapes: [[null]] };
    case "ConstantOfShape":
      return { shapes: [inputs[0]?.values ? [...inputs[0].values] : undefined] };
    case "Pad": {
      const pads = numericValues(inputs[1]?.values);
      if (!s0 || !pads) return none;
      const r = s0.length;
      return { shapes: [s0.map((d, i) => (typeof d === "number" ? d + pads[i] + pads[i + r] : null))] };
    }
    case "ScatterND":
    case "ScatterElements":
      return { shapes: [s0 ? [...s0] : undefined] };
    default:
      return none;
  }
}
