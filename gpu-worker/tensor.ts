/**
 * The engine's host tensor: a typed array with dims and a dtype name. It is what crosses the Worker
 * boundary and what pipelines, schedulers and trainers compute on; only `ort/` converts it to ORT's type.
 *
 * @example
 * ```ts
 * const t = Tensor.zeros([1, 4, 8, 8]);
 * t.size; // 256
 * ```
 */
import type { DataType } from "./graph/builder.ts";

export type TensorData = Float32Array | BigInt64Array | Int32Array | Uint8Array;

export class Tensor {
  constructor(readonly dtype: DataType, readonly dims: number[], readonly data: TensorData) {
    const n = dims.reduce((a, b) => a * b, 1);
    if (data.length !== n) {
      throw new RangeError(`tensor data has ${data.length} elements, dims ${JSON.stringify(dims)} need ${n}`);
    }
  }

  static f32(dims: number[], data?: Float32Array | number[]): Tensor {
    const n = dims.reduce((a, b) => a * b, 1);
    return new Tensor("float32", dims, data ? Float32Array.from(data) : new Float32Array(n));
  }

  static zeros(dims: number[]): Tensor {
    return Tensor.f32(dims);
  }

  /** Float tensors stacked along their first axis (the same trailing dims). */
  static concat(ts: readonly Tensor[]): Tensor {
    if (!ts.length) throw new RangeError("Tensor.concat needs at least one tensor");
    const rest = ts[0].dims.slice(1);
    for (const t of ts) {
      if (t.dims.length !== rest.length + 1 || t.dims.slice(1).some((d, i) => d !== rest[i])) {
        throw new RangeError(`Tensor.concat: [${t.dims}] does not stack with [${ts[0].dims}] along axis 0`);
      }
    }
    const out = new Float32Array(ts.reduce((s, t) => s + t.f.length, 0));
    let o = 0;
    for (const t of ts) {
      out.set(t.f, o);
      o += t.f.length;
    }
    return Tensor.f32([ts.reduce((s, t) => s + t.dims[0], 0), ...rest], out);
  }

  static i64(dims: number[], data: number[]): Tensor {
    return new Tensor("int64", dims, BigInt64Array.from(data.map((x) => BigInt(Math.trunc(x)))));
  }

  get size(): number {
    return this.data.length;
  }

  /** The float32 data; throws for other dtypes. */
  get f(): Float32Array {
    if (!(this.data instanceof Float32Array)) {
      throw new TypeError(`expected a float32 tensor, got ${this.dtype}`);
    }
    return this.data;
  }
}
