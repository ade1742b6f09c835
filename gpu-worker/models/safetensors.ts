/**
 * Safetensors reader and writer (the only weight format we accept: no pickle, ever).
 *
 * Layout: u64 little-endian header length N, N bytes of JSON header
 * `{name: {dtype, shape, data_offsets: [begin, end]}, __metadata__?: {k: v}}`, then the data block.
 * The reader checks everything an attacker could get wrong: header size cap, offsets inside the data
 * block, sizes matching dtype x shape, no overlapping tensors. Errors name the file and the tensor.
 *
 * @example
 * ```ts
 * const bytes = writeSafetensors({ w: { dtype: "F32", shape: [2], data: new Float32Array([1, 2]) } });
 * const file = readSafetensors(bytes, "w.safetensors");
 * file.float32("w"); // Float32Array [1, 2]
 * ```
 */

export type SafetensorsDType = "F32" | "F16" | "BF16" | "F64" | "I64" | "I32" | "I16" | "I8" | "U8" | "BOOL";

const DTYPE_BYTES: Record<SafetensorsDType, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

/** Largest header we parse (100 MB, as the reference implementation). */
export const MAX_HEADER_BYTES = 100_000_000;

export interface TensorEntry {
  dtype: SafetensorsDType;
  shape: number[];
  /** Byte range inside the data block. */
  begin: number;
  end: number;
}

/** A tensor to write: typed array in the dtype's natural JS type (F16/BF16 as Uint16Array). */
export interface TensorData {
  dtype: SafetensorsDType;
  shape: number[];
  data:
    | Float32Array
    | Float64Array
    | Int32Array
    | BigInt64Array
    | Uint16Array
    | Int16Array
    | Int8Array
    | Uint8Array;
}

/** Raised for malformed files; callers catch it to answer 4xx on uploads. */
export class SafetensorsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SafetensorsError";
  }
}

/** A parsed safetensors file: lazy, zero-copy access to each tensor. */
export class SafetensorsFile {
  constructor(
    readonly source: string,
    readonly tensors: Map<string, TensorEntry>,
    readonly metadata: Record<string, string>,
    private readonly data: Uint8Array,
  ) {}

  names(): string[] {
    return [...this.tensors.keys()];
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  entry(name: string): TensorEntry {
    const e = this.tensors.get(name);
    if (!e) throw new SafetensorsError(`${this.source}: no tensor named "${name}"`);
    return e;
  }

  /** Raw bytes of one tensor (a view, not a copy). */
  bytes(name: string): Uint8Array {
    const e = this.entry(name);
    return this.data.subarray(e.begin, e.end);
  }

  /** Any float tensor (F32, F16, BF16, F64) converted to float32. */
  float32(name: string): Float32Array {
    const e = this.entry(name);
    const b = this.bytes(name);
    const n = numel(e.shape);
    const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
    const out = new Float32Array(n);
    switch (e.dtype) {
      case "F32":
        for (let i = 0; i < n; i++) out[i] = dv.getFloat32(i * 4, true);
        return out;
      case "F64":
        for (let i = 0; i < n; i++) out[i] = dv.getFloat64(i * 8, true);
        return out;
      case "F16":
        for (let i = 0; i < n; i++) out[i] = halfToFloat(dv.getUint16(i * 2, true));
        return out;
      case "BF16": {
        const tmp = new DataView(new ArrayBuffer(4));
        for (let i = 0; i < n; i++) {
          tmp.setUint32(0, dv.getUint16(i * 2, true) << 16, true);
          out[i] = tmp.getFloat32(0, true);
        }
        return out;
      }
      default:
        throw new SafetensorsError(
          `${this.source}: tensor "${name}" has dtype ${e.dtype}, expected a float dtype (F32, F16, BF16, F64)`,
        );
    }
  }

  /** Integer tensor (I64, I32, I16, I8, U8, BOOL) as numbers. */
  int(name: string): number[] {
    const e = this.entry(name);
    const b = this.bytes(name);
    const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
    const n = numel(e.shape);
    const out = new Array<number>(n);
    for (let i = 0; i < n; i++) {
      switch (e.dtype) {
        case "I64":
          out[i] = Number(dv.getBigInt64(i * 8, true));
          break;
        case "I32":
          out[i] = dv.getInt32(i * 4, true);
          break;
        case "I16":
          out[i] = dv.getInt16(i * 2, true);
          break;
        case "I8":
          out[i] = dv.getInt8(i);
          break;
        case "U8":
        case "BOOL":
          out[i] = dv.getUint8(i);
          break;
        default:
          throw new SafetensorsError(
            `${this.source}: tensor "${name}" has dtype ${e.dtype}, expected an integer dtype`,
          );
      }
    }
    return out;
  }
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Parses safetensors bytes; `source` (a file name) is quoted in every error. */
export function readSafetensors(bytes: Uint8Array, source = "<bytes>"): SafetensorsFile {
  if (bytes.byteLength < 8) {
    throw new SafetensorsError(
      `${source}: file is ${bytes.byteLength} bytes, too short for the 8-byte header length`,
    );
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = dv.getBigUint64(0, true);
  if (headerLen > BigInt(MAX_HEADER_BYTES)) {
    throw new SafetensorsError(
      `${source}: header length ${headerLen} exceeds the ${MAX_HEADER_BYTES}-byte limit`,
    );
  }
  const n = Number(headerLen);
  if (8 + n > bytes.byteLength) {
    throw new SafetensorsError(
      `${source}: header length ${n} runs past the end of the file (${bytes.byteLength} bytes)`,
    );
  }
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + n)));
  } catch (e) {
    throw new SafetensorsError(`${source}: header is not valid UTF-8 JSON (${(e as Error).message})`);
  }
  if (header === null || typeof header !== "object" || Array.isArray(header)) {
    throw new SafetensorsError(`${source}: header must be a JSON object`);
  }
  const data = bytes.subarray(8 + n);
  const tensors = new Map<string, TensorEntry>();
  let metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(header)) {
    if (name === "__metadata__") {
      if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
        throw new SafetensorsError(
          `${source}: __metadata__ is ${JSON.stringify(raw)}, expected an object of strings`,
        );
      }
      for (const [k, v] of Object.entries(raw)) {
        if (typeof v !== "string") {
          throw new SafetensorsError(
            `${source}: __metadata__ entry "${k}" is ${JSON.stringify(v)}, expected a string`,
          );
        }
      }
      metadata = raw as Record<string, string>;
      continue;
    }
    const info = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const where = `${source}: tensor "${name}"`;
    if (typeof info?.dtype !== "string" || !Object.hasOwn(DTYPE_BYTES, info.dtype)) {
      throw new SafetensorsError(
        `${where} has dtype ${JSON.stringify(info?.dtype)}, expected one of ${
          Object.keys(DTYPE_BYTES).join(", ")
        }`,
      );
    }
    const dtype = info.dtype as SafetensorsDType;
    if (!Array.isArray(info.shape) || !info.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new SafetensorsError(
        `${where} has shape ${JSON.stringify(info.shape)}, expected non-negative integers`,
      );
    }
    const off = info.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every((o) => Number.isSafeInteger(o) && o >= 0)) {
      throw new SafetensorsError(`${where} has data_offsets ${JSON.stringify(off)}, expected [begin, end]`);
    }
    const [begin, end] = off as [number, number];
    const want = numel(info.shape as number[]) * DTYPE_BYTES[dtype];
    if (end < begin || end - begin !== want) {
      throw new SafetensorsError(
        `${where}: data_offsets [${begin}, ${end}] span ${end - begin} bytes, but ${dtype} ${
          JSON.stringify(info.shape)
        } needs ${want}`,
      );
    }
    if (end > data.byteLength) {
      throw new SafetensorsError(
        `${where}: data ends at byte ${end} of the data block, past its end (${data.byteLength} bytes); the file is truncated`,
      );
    }
    tensors.set(name, { dtype, shape: info.shape as number[], begin, end });
  }
  // Empty tensors occupy no bytes and are left out: sorted between two overlapping tensors, one would hide
  // their overlap from a neighbour-only check. Each tensor must start at or after the furthest end so far.
  const sorted = [...tensors.entries()].filter(([, t]) => t.end > t.begin)
    .sort((a, b) => a[1].begin - b[1].begin || a[1].end - b[1].end);
  let furthest: [string, TensorEntry] | undefined;
  for (const [cn, c] of sorted) {
    if (furthest && c.begin < furthest[1].end) {
      const [pn, p] = furthest;
      throw new SafetensorsError(
        `${source}: tensors "${pn}" [${p.begin}, ${p.end}] and "${cn}" [${c.begin}, ${c.end}] overlap`,
      );
    }
    if (!furthest || c.end > furthest[1].end) furthest = [cn, c];
  }
  return new SafetensorsFile(source, tensors, metadata, data);
}

/** Reads a safetensors file from disk. */
export async function loadSafetensors(path: string): Promise<SafetensorsFile> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    throw new SafetensorsError(`${path}: cannot read (${(e as Error).message})`);
  }
  return readSafetensors(bytes, path);
}

/** Serializes tensors (sorted by name, 8-byte aligned header) with optional string metadata. */
export function writeSafetensors(
  tensors: Record<string, TensorData>,
  metadata?: Record<string, string>,
): Uint8Array {
  const names = Object.keys(tensors).sort();
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const name of names) {
    const t = tensors[name];
    const want = numel(t.shape) * DTYPE_BYTES[t.dtype];
    if (t.data.byteLength !== want) {
      throw new RangeError(
        `tensor "${name}": ${t.data.byteLength} bytes of data, but ${t.dtype} ${
          JSON.stringify(t.shape)
        } needs ${want}`,
      );
    }
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + want] };
    offset += want;
  }
  // Pad with spaces to a multiple of 8 bytes of UTF-8 (not of UTF-16 code units: names may be non-ASCII).
  const unpadded = new TextEncoder().encode(JSON.stringify(header));
  const head = new Uint8Array(Math.ceil(unpadded.byteLength / 8) * 8).fill(0x20);
  head.set(unpadded);
  const out = new Uint8Array(8 + head.byteLength + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(head.byteLength), true);
  out.set(head, 8);
  let pos = 8 + head.byteLength;
  for (const name of names) {
    const d = tensors[name].data;
    out.set(new Uint8Array(d.buffer, d.byteOffset, d.byteLength), pos);
    pos += d.byteLength;
  }
  return out;
}

/** IEEE 754 half (as its 16 bits) to a JS number. */
export function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}
