/**
 * The ONNX graph builder: ops as function calls, weights as initializers, named values, functions for
 * subgraph reuse, and serialization (with external data when weights exceed protobuf's 2 GB).
 *
 * Values are plain records ({name, dtype}); node names follow the scope stack (`down_blocks.0/resnets.1/Conv`)
 * so a profile or an error from ONNX Runtime points at the diffusers module it came from.
 *
 * @example
 * ```ts
 * const g = new GraphBuilder("add");
 * const a = g.input("a", "float32", [2]);
 * const b = g.constant(new Float32Array([1, 2]), [2]);
 * g.output(g.op("Add", [a, b]), "c");
 * const bytes = g.toBytes();
 * ```
 */
import onnxProto from "onnx-proto";
import { inferShapes, type SDim, type Shape } from "./shape_inference.ts";

// deno-lint-ignore no-explicit-any
export const onnx: any = (onnxProto as any).onnx ?? onnxProto;

export type DataType = "float32" | "float16" | "float64" | "int64" | "int32" | "int8" | "uint8" | "bool";
export type Dim = number | string;

/** A value in the graph: a graph input, an initializer or a node output. */
export interface Value {
  readonly name: string;
  readonly dtype: DataType;
}

export const ONNX_DTYPE: Record<DataType, number> = {
  float32: 1,
  uint8: 2,
  int8: 3,
  int32: 6,
  int64: 7,
  bool: 9,
  float16: 10,
  float64: 11,
};

export type AttrValue = number | string | number[] | string[] | Float32Array | { tensor: TensorInit } | {
  float: number;
} | { floats: number[] };

/** Initializer data: what ends up in a TensorProto. */
export interface TensorInit {
  dtype: DataType;
  dims: number[];
  data: Float32Array | Int32Array | BigInt64Array | Uint8Array | Float64Array | Uint16Array | Int8Array;
}

/** The opset the builder emits. 17 has LayerNormalization; everything else we use is older. */
export const OPSET = 17;

/** One emitted node (read by the autodiff). */
export interface NodeRec {
  opType: string;
  domain: string;
  inputs: string[];
  outputs: string[];
  name: string;
  attrs: Record<string, AttrValue>;
}

interface FunctionRec {
  name: string;
  domain: string;
  inputs: string[];
  outputs: string[];
  nodes: NodeRec[];
}

export const FUNCTION_DOMAIN = "ai.personalize.fn";

export class GraphBuilder {
  readonly inputs: { name: string; dtype: DataType; shape: Dim[] }[] = [];
  readonly outputs: { name: string; dtype: DataType; shape?: Dim[] }[] = [];
  readonly initializers = new Map<string, TensorInit>();
  readonly functions = new Map<string, FunctionRec>();
  private nodes: NodeRec[] = [];
  private shapes = new Map<string, Shape | undefined>();
  private knownValues = new Map<string, SDim[]>();
  private dtypes = new Map<string, DataType>();
  private names = new Set<string>();
  private scopes: string[] = [];
  private counter = 0;

  constructor(readonly name: string) {}

  /** Number of nodes emitted so far. */
  get nodeCount(): number {
    return this.nodes.length;
  }

  /** Runs `fn` with `scope` appended to the naming prefix (dots join module paths, as diffusers). */
  scope<T>(scope: string | number, fn: () => T): T {
    this.scopes.push(String(scope));
    try {
      return fn();
    } finally {
      this.scopes.pop();
    }
  }

  /** The current module path, e.g. `down_blocks.0.resnets.1`. */
  path(leaf?: string): string {
    const parts = leaf === undefined ? this.scopes : [...this.scopes, leaf];
    return parts.join(".");
  }

  private fresh(hint: string): string {
    const base = `${this.path() || "g"}/${hint}`;
    let name = `${base}_${this.counter++}`;
    while (this.names.has(name)) name = `${base}_${this.counter++}`;
    this.names.add(name);
    return name;
  }

  private claim(name: string): string {
    if (this.names.has(name)) throw new Error(`graph "${this.name}": value name "${name}" is already used`);
    this.names.add(name);
    return name;
  }

  input(name: string, dtype: DataType, shape: Dim[]): Value {
    this.claim(name);
    this.inputs.push({ name, dtype, shape });
    this.shapes.set(name, [...shape]);
    this.dtypes.set(name, dtype);
    return { name, dtype };
  }

  /** The nodes emitted so far, in order (a topological order). */
  get graphNodes(): readonly NodeRec[] {
    return this.nodes;
  }

  /** Static shape of a value (symbolic dims as strings, null where unknown), if inferable. */
  shapeOf(v: Value | string): Shape | undefined {
    return this.shapes.get(typeof v === "string" ? v : v.name);
  }

  /** Known values of a small int64 vector (shape computations), if any. */
  valuesOf(v: Value | string): SDim[] | undefined {
    return this.knownValues.get(typeof v === "string" ? v : v.name);
  }

  /** The Value record of a name already in the graph. */
  valueOf(name: string): Value {
    const dtype = this.dtypes.get(name);
    if (!dtype) throw new Error(`graph "${this.name}": no value named "${name}"`);
    return { name, dtype };
  }

  private recordInit(name: string, init: TensorInit) {
    this.shapes.set(name, [...init.dims]);
    this.dtypes.set(name, init.dtype);
    if (init.dtype !== "float16" && init.data.length <= 16) {
      this.knownValues.set(name, Array.from(init.data as ArrayLike<number | bigint>, (x) => Number(x)));
    }
  }

  output(v: Value, name?: string, shape?: Dim[]): Value {
    let out = v;
    if (name && name !== v.name) out = this.op("Identity", [v], {}, { name });
    this.outputs.push({ name: out.name, dtype: out.dtype, shape });
    return out;
  }

  /** A named initializer (a frozen weight). */
  initializer(name: string, init: TensorInit): Value {
    this.claim(name);
    this.initializers.set(name, init);
    this.recordInit(name, init);
    return { name, dtype: init.dtype };
  }

  /** An anonymous constant initializer. Scalars get shape []. */
  constant(data: number[] | Float32Array, dims: number[] = [], dtype: DataType = "float32"): Value {
    const name = this.fresh("const");
    const init = { dtype, dims, data: typed(dtype, data) };
    this.initializers.set(name, init);
    this.recordInit(name, init);
    return { name, dtype };
  }

  scalar(x: number, dtype: DataType = "float32"): Value {
    return this.constant([x], [], dtype);
  }

  ints(xs: number[]): Value {
    return this.constant(xs, [xs.length], "int64");
  }

  /** Emits one node and returns its first output. */
  op(
    opType: string,
    inputs: (Value | null)[],
    attrs: Record<string, AttrValue> = {},
    opts: OpOptions = {},
  ): Value {
    return this.opN(opType, inputs, attrs, 1, opts)[0];
  }

  /** Emits one node with `nOut` outputs. */
  opN(
    opType: string,
    inputs: (Value | null)[],
    attrs: Record<string, AttrValue>,
    nOut: number,
    opts: OpOptions = {},
  ): Value[] {
    const dtype = opts.dtype ?? inferDtype(opType, inputs, attrs);
    const outs: Value[] = [];
    for (let i = 0; i < nOut; i++) {
      const name = i === 0 && opts.name ? this.claim(opts.name) : this.fresh(opType);
      outs.push({ name, dtype });
    }
    this.nodes.push({
      opType,
      domain: opts.domain ?? "",
      inputs: inputs.map((v) => v?.name ?? ""),
      outputs: outs.map((o) => o.name),
      name: this.fresh(`${opType}_node`),
      attrs,
    });
    const inferred = opts.domain ? { shapes: [], values: [] } : inferShapes(
      opType,
      inputs.map((
        v,
      ) => (v ? { shape: this.shapes.get(v.name), values: this.knownValues.get(v.name) } : null)),
      attrs,
      nOut,
    );
    outs.forEach((o, i) => {
      this.dtypes.set(o.name, o.dtype);
      this.shapes.set(o.name, inferred.shapes[i]);
      const vals = inferred.values?.[i];
      if (vals) this.knownValues.set(o.name, vals);
    });
    return outs;
  }

  /**
   * Defines a reusable subgraph as an ONNX function (ORT inlines it). `body` receives a builder whose inputs
   * are the function's formal parameters; it returns the function's outputs.
   */
  defineFunction(name: string, inputNames: string[], body: (g: GraphBuilder, ...xs: Value[]) => Value[]) {
    const sub = new GraphBuilder(name);
    const formals = inputNames.map((n) => {
      sub.names.add(n);
      return { name: n, dtype: "float32" as DataType };
    });
    const outs = body(sub, ...formals);
    if (sub.initializers.size) {
      // Functions cannot hold initializers; lift constants into Constant nodes.
      for (const [n, t] of sub.initializers) {
        sub.nodes.unshift({
          opType: "Constant",
          domain: "",
          inputs: [],
          outputs: [n],
          name: `${n}_c`,
          attrs: { value: { tensor: t } },
        });
      }
    }
    this.functions.set(name, {
      name,
      domain: FUNCTION_DOMAIN,
      inputs: inputNames,
      outputs: outs.map((o) => o.name),
      nodes: sub.nodes,
    });
    return (...args: Value[]): Value[] =>
      this.opN(name, args, {}, outs.length, { domain: FUNCTION_DOMAIN, dtype: args[0]?.dtype });
  }

  /** Total bytes of initializer data. */
  initializerBytes(): number {
    let n = 0;
    for (const t of this.initializers.values()) n += t.data.byteLength;
    return n;
  }

  /**
   * The ModelProto. With `externalData`, initializers larger than `threshold` bytes are written to that
   * file name (relative to the model) and the returned `external` holds their bytes in order.
   */
  toModelProto(opts: { externalData?: string; threshold?: number } = {}) {
    const external: Uint8Array[] = [];
    let offset = 0;
    const initializer = [...this.initializers.entries()].map(([name, t]) => {
      const raw = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
      if (opts.externalData && raw.byteLength > (opts.threshold ?? 1024)) {
        const pad = (64 - (offset % 64)) % 64; // keep each tensor aligned for mmap
        if (pad) external.push(new Uint8Array(pad));
        offset += pad;
        const entry = onnx.TensorProto.create({
          name,
          dims: t.dims,
          dataType: ONNX_DTYPE[t.dtype],
          dataLocation: 1,
          externalData: [
            { key: "location", value: opts.externalData },
            { key: "offset", value: String(offset) },
            { key: "length", value: String(raw.byteLength) },
          ],
        });
        external.push(raw);
        offset += raw.byteLength;
        return entry;
      }
      return onnx.TensorProto.create({ name, dims: t.dims, dataType: ONNX_DTYPE[t.dtype], rawData: raw });
    });
    const model = onnx.ModelProto.create({
      irVersion: 8,
      producerName: "personalize-engine",
      opsetImport: [{ domain: "", version: OPSET }, { domain: FUNCTION_DOMAIN, version: 1 }],
      graph: onnx.GraphProto.create({
        name: this.name,
        node: this.nodes.map(nodeProto),
        input: this.inputs.map((i) => valueInfo(i.name, i.dtype, i.shape)),
        output: this.outputs.map((o) => valueInfo(o.name, o.dtype, o.shape)),
        initializer,
      }),
      functions: [...this.functions.values()].map((f) =>
        onnx.FunctionProto.create({
          name: f.name,
          domain: f.domain,
          input: f.inputs,
          output: f.outputs,
          node: f.nodes.map(nodeProto),
          opsetImport: [{ domain: "", version: OPSET }],
        })
      ),
    });
    return { model, external };
  }

  /** Serialized model with every initializer embedded (fails beyond protobuf's 2 GB). */
  toBytes(): Uint8Array {
    if (this.initializerBytes() > 1.8e9) {
      throw new RangeError(
        `graph "${this.name}" holds ${this.initializerBytes()} bytes of weights, over protobuf's 2 GB; use saveModel()`,
      );
    }
    return onnx.ModelProto.encode(this.toModelProto().model).finish();
  }

  /** Writes `dir/name.onnx` (+ `name.onnx.data` for large weights); returns the model path. */
  async saveModel(dir: string, fileName = `${this.name}.onnx`): Promise<string> {
    await Deno.mkdir(dir, { recursive: true });
    const dataName = `${fileName}.data`;
    const { model, external } = this.toModelProto({ externalData: dataName });
    const path = `${dir}/${fileName}`;
    await Deno.writeFile(path, onnx.ModelProto.encode(model).finish());
    const f = await Deno.open(`${dir}/${dataName}`, { write: true, create: true, truncate: true });
    try {
      for (const chunk of external) {
        let off = 0;
        while (off < chunk.byteLength) off += await f.write(chunk.subarray(off));
      }
    } finally {
      f.close();
    }
    return path;
  }
}

export interface OpOptions {
  name?: string;
  domain?: string;
  dtype?: DataType;
}

function typed(dtype: DataType, data: number[] | Float32Array): TensorInit["data"] {
  switch (dtype) {
    case "float32":
      return data instanceof Float32Array ? data : Float32Array.from(data);
    case "float64":
      return Float64Array.from(data);
    case "int64":
      return BigInt64Array.from(Array.from(data, (x) => BigInt(Math.trunc(x))));
    case "int32":
      return Int32Array.from(data);
    case "bool":
    case "uint8":
      return Uint8Array.from(data);
    case "int8":
      return Int8Array.from(data);
    case "float16":
      throw new TypeError("float16 constants are not supported by constant(); pass a TensorInit");
  }
}

function inferDtype(opType: string, inputs: (Value | null)[], attrs: Record<string, AttrValue>): DataType {
  switch (opType) {
    case "Shape":
    case "Size":
    case "ArgMax":
    case "ArgMin":
    case "NonZero":
      return "int64";
    case "Equal":
    case "Less":
    case "Greater":
    case "LessOrEqual":
    case "GreaterOrEqual":
    case "Not":
    case "And":
    case "Or":
      return "bool";
    case "Cast": {
      const to = attrs.to as number;
      return (Object.entries(ONNX_DTYPE).find(([, v]) => v === to)?.[0] ?? "float32") as DataType;
    }
    case "Where":
      return inputs[1]?.dtype ?? "float32";
    case "ConstantOfShape": {
      const v = attrs.value as { tensor?: TensorInit } | undefined;
      return v?.tensor?.dtype ?? "float32";
    }
    default:
      return inputs.find((v) => v)?.dtype ?? "float32";
  }
}

function valueInfo(name: string, dtype: DataType, shape?: Dim[]) {
  return {
    name,
    type: {
      tensorType: {
        elemType: ONNX_DTYPE[dtype],
        shape: shape
          ? { dim: shape.map((d) => (typeof d === "number" ? { dimValue: d } : { dimParam: d })) }
          : undefined,
      },
    },
  };
}

function nodeProto(n: NodeRec) {
  return onnx.NodeProto.create({
    opType: n.opType,
    domain: n.domain,
    input: n.inputs,
    output: n.outputs,
    name: n.name,
    attribute: Object.entries(n.attrs).map(([k, v]) => attrProto(k, v)),
  });
}

function attrProto(name: string, v: AttrValue) {
  const T = onnx.AttributeProto.AttributeType;
  if (typeof v === "number") {
    return Number.isInteger(v) ? { name, type: T.INT, i: v } : { name, type: T.FLOAT, f: v };
  }
  if (typeof v === "string") return { name, type: T.STRING, s: new TextEncoder().encode(v) };
  if (v instanceof Float32Array) return { name, type: T.FLOATS, floats: Array.from(v) };
  if (Array.isArray(v)) {
    if (v.length && typeof v[0] === "string") {
      return { name, type: T.STRINGS, strings: (v as string[]).map((s) => new TextEncoder().encode(s)) };
    }
    return { name, type: T.INTS, ints: v as number[] };
  }
  if ("float" in v) return { name, type: T.FLOAT, f: v.float };
  if ("floats" in v) return { name, type: T.FLOATS, floats: v.floats };
  const t = v.tensor;
  return {
    name,
    type: T.TENSOR,
    t: {
      dims: t.dims,
      dataType: ONNX_DTYPE[t.dtype],
      rawData: new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength),
    },
  };
}
