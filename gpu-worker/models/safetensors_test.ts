/**
 * Safetensors: round trips per dtype (F16/BF16 decoded to float32), metadata, the writer's header alignment,
 * and every malformed-file check of the reader, each error naming the file and, where one is at fault, the
 * tensor.
 */
import { assert, assertEquals, assertRejects, assertThrows } from "../testing.ts";
import {
  halfToFloat,
  loadSafetensors,
  MAX_HEADER_BYTES,
  readSafetensors,
  SafetensorsError,
  writeSafetensors,
} from "./safetensors.ts";

const SRC = "model.safetensors";

/** A file from a raw header (string or object) and data block; `declared` overrides the header length. */
function rawFile(
  header: string | object,
  data: Uint8Array = new Uint8Array(0),
  declared?: bigint,
): Uint8Array {
  const head = new TextEncoder().encode(typeof header === "string" ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + head.byteLength + data.byteLength);
  new DataView(out.buffer).setBigUint64(0, declared ?? BigInt(head.byteLength), true);
  out.set(head, 8);
  out.set(data, 8 + head.byteLength);
  return out;
}

/** Asserts readSafetensors rejects `bytes` with a SafetensorsError whose message holds every fragment. */
function rejects(bytes: Uint8Array, ...fragments: string[]): SafetensorsError {
  const e = assertThrows(() => readSafetensors(bytes, SRC), SafetensorsError);
  for (const f of [`${SRC}: `, ...fragments]) {
    assert(e.message.includes(f), `expected "${f}" in: ${e.message}`);
  }
  return e;
}

function headerLength(bytes: Uint8Array): number {
  return Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
}

Deno.test("round trip: F32, F64, I64, I32, U8 and an empty tensor", () => {
  const f32 = new Float32Array([1.5, -2, 3.25e-8, 65504, -0, 1e30]);
  const f64 = new Float64Array([Math.PI, -1e300]);
  const i64 = new BigInt64Array([-1n, 2n ** 40n, 0n, -(2n ** 50n)]);
  const i32 = new Int32Array([-(2 ** 31), 7]);
  const u8 = new Uint8Array([0, 255, 1]);
  const bytes = writeSafetensors({
    "w.f32": { dtype: "F32", shape: [2, 3], data: f32 },
    "w.f64": { dtype: "F64", shape: [2], data: f64 },
    "ids": { dtype: "I64", shape: [2, 2], data: i64 },
    "i32": { dtype: "I32", shape: [2], data: i32 },
    "mask": { dtype: "U8", shape: [3], data: u8 },
    "empty": { dtype: "F32", shape: [0, 4], data: new Float32Array(0) },
  });
  const file = readSafetensors(bytes, SRC);
  assertEquals(file.names(), ["empty", "i32", "ids", "mask", "w.f32", "w.f64"]); // sorted by name
  assertEquals(file.entry("w.f32").shape, [2, 3]);
  assertEquals(file.entry("w.f32").dtype, "F32");
  assertEquals(Array.from(file.float32("w.f32")), Array.from(f32));
  assert(Object.is(file.float32("w.f32")[4], -0), "-0 keeps its sign");
  assertEquals(Array.from(file.float32("w.f64")), [Math.fround(Math.PI), -Infinity]);
  assertEquals(file.int("ids"), [-1, 2 ** 40, 0, -(2 ** 50)]);
  assertEquals(file.int("i32"), [-(2 ** 31), 7]);
  assertEquals(file.int("mask"), [0, 255, 1]);
  assertEquals(file.float32("empty").length, 0);
  assertEquals(Array.from(file.bytes("mask")), [0, 255, 1]);
  assert(file.has("ids") && !file.has("nope"));
  assertEquals(file.metadata, {});
});

Deno.test("F16 and BF16 read as float32 with the right values", () => {
  // IEEE half bit patterns.
  const f16: [number, number][] = [
    [0x3e00, 1.5],
    [0xc000, -2],
    [0x7bff, 65504], // largest finite half
    [0x3c00, 1],
    [0x0000, 0],
    [0x8000, -0],
    [0x0001, 2 ** -24], // smallest subnormal
    [0x03ff, 1023 * 2 ** -24], // largest subnormal
    [0x0400, 2 ** -14], // smallest normal
    [0x3555, 0.333251953125],
    [0x7c00, Infinity],
    [0xfc00, -Infinity],
  ];
  // bfloat16: the top 16 bits of a float32.
  const bf16: [number, number][] = [
    [0x3fc0, 1.5],
    [0xc000, -2],
    [0x4049, 3.140625],
    [0x7f7f, 3.3895313892515355e38], // largest finite bf16
    [0x0001, 9.183549615799121e-41], // smallest subnormal
    [0x8000, -0],
    [0xbf80, -1],
    [0xff80, -Infinity],
  ];
  const bytes = writeSafetensors({
    h: { dtype: "F16", shape: [f16.length], data: Uint16Array.from(f16, ([b]) => b) },
    b: { dtype: "BF16", shape: [2, bf16.length / 2], data: Uint16Array.from(bf16, ([b]) => b) },
    nan: { dtype: "F16", shape: [1], data: Uint16Array.of(0x7e00) },
  });
  const file = readSafetensors(bytes, SRC);
  const h = file.float32("h");
  f16.forEach(([bits, v], i) =>
    assert(Object.is(h[i], v), `F16 0x${bits.toString(16)}: got ${h[i]}, expected ${v}`)
  );
  const b = file.float32("b");
  bf16.forEach(([bits, v], i) =>
    assert(Object.is(b[i], v), `BF16 0x${bits.toString(16)}: got ${b[i]}, expected ${v}`)
  );
  assert(Number.isNaN(file.float32("nan")[0]));
  assertEquals(halfToFloat(0x3e00), 1.5);
});

Deno.test("metadata round trip", () => {
  const metadata = { format: "pt", "modelspec.title": "tiny ✓ — äöü", empty: "" };
  const bytes = writeSafetensors({ w: { dtype: "F32", shape: [1], data: new Float32Array([1]) } }, metadata);
  const file = readSafetensors(bytes, SRC);
  assertEquals(file.metadata, metadata);
  assertEquals(file.names(), ["w"]); // __metadata__ is not a tensor
});

Deno.test("the writer's header is 8-byte aligned, also with non-ASCII names", () => {
  for (const name of ["a", "ab", "abc", "ü", "unet.重み", "emoji😀", "ñ".repeat(5), "x".repeat(13)]) {
    for (const meta of [undefined, { "clé": "välue" }]) {
      const bytes = writeSafetensors(
        { [name]: { dtype: "F32", shape: [2], data: new Float32Array([1, 2]) } },
        meta,
      );
      const n = headerLength(bytes);
      assertEquals((8 + n) % 8, 0, `header of ${JSON.stringify(name)} is ${n} bytes`);
      assertEquals(bytes.byteLength, 8 + n + 8);
      const file = readSafetensors(bytes, SRC);
      assertEquals(file.names(), [name]);
      assertEquals(Array.from(file.float32(name)), [1, 2]);
      // The data block starts right after the header: an 8-byte aligned file offset.
      assertEquals(Array.from(new Float32Array(bytes.buffer.slice(8 + n))), [1, 2]);
    }
  }
});

Deno.test("the writer refuses data whose size does not match dtype x shape", () => {
  assertThrows(
    () => writeSafetensors({ w: { dtype: "F32", shape: [3], data: new Float32Array(2) } }),
    RangeError,
    'tensor "w": 8 bytes of data, but F32 [3] needs 12',
  );
});

Deno.test("a file inside a larger, unaligned buffer reads the same", () => {
  const bytes = writeSafetensors({ w: { dtype: "F32", shape: [2], data: new Float32Array([3, 4]) } });
  const big = new Uint8Array(bytes.byteLength + 5);
  big.set(bytes, 3);
  const file = readSafetensors(big.subarray(3, 3 + bytes.byteLength), SRC);
  assertEquals(Array.from(file.float32("w")), [3, 4]);
});

Deno.test("wrong-kind access names the file and the tensor", () => {
  const file = readSafetensors(
    writeSafetensors({
      w: { dtype: "F32", shape: [1], data: new Float32Array(1) },
      i: { dtype: "I64", shape: [1], data: new BigInt64Array(1) },
    }),
    SRC,
  );
  assertThrows(() => file.entry("missing"), SafetensorsError, `${SRC}: no tensor named "missing"`);
  assertThrows(
    () => file.float32("i"),
    SafetensorsError,
    `${SRC}: tensor "i" has dtype I64, expected a float dtype`,
  );
  assertThrows(
    () => file.int("w"),
    SafetensorsError,
    `${SRC}: tensor "w" has dtype F32, expected an integer dtype`,
  );
});

// ---------------------------------------------------------------------------------------------------------
// Malformed files.

const w16 = { dtype: "F32", shape: [2, 2], data_offsets: [0, 16] };

Deno.test("malformed: file too short for the header length", () => {
  rejects(new Uint8Array(0), "file is 0 bytes, too short");
  rejects(new Uint8Array(7), "file is 7 bytes, too short");
});

Deno.test("malformed: header length past the end of the file", () => {
  const ok = rawFile({ w: w16 }, new Uint8Array(16));
  rejects(rawFile({ w: w16 }, new Uint8Array(0), 1000n), "header length 1000 runs past the end of the file");
  rejects(rawFile("", new Uint8Array(0), 1n), "header length 1 runs past the end of the file (8 bytes)");
  // One byte short of the declared header.
  rejects(ok.slice(0, 8 + headerLength(ok) - 1), "runs past the end of the file");
});

Deno.test("malformed: header length over the cap", () => {
  rejects(
    rawFile("{}", new Uint8Array(0), BigInt(MAX_HEADER_BYTES) + 1n),
    `exceeds the ${MAX_HEADER_BYTES}-byte limit`,
  );
  rejects(rawFile("{}", new Uint8Array(0), 2n ** 64n - 1n), "header length 18446744073709551615 exceeds");
});

Deno.test("malformed: header that is not a JSON object", () => {
  rejects(rawFile('{"w": {"dtype": "F32",'), "header is not valid UTF-8 JSON");
  rejects(rawFile("not json at all"), "header is not valid UTF-8 JSON");
  // Invalid UTF-8 (a lone continuation byte) inside a JSON string.
  const bad = rawFile('{"w":"x"}');
  bad[8 + 6] = 0x80;
  rejects(bad, "header is not valid UTF-8 JSON");
  rejects(rawFile("[1, 2]"), "header must be a JSON object");
  rejects(rawFile("null"), "header must be a JSON object");
  rejects(rawFile("42"), "header must be a JSON object");
  rejects(rawFile(""), "header is not valid UTF-8 JSON");
});

Deno.test("malformed: bad dtype, shape or data_offsets entries name the tensor", () => {
  const data = new Uint8Array(16);
  rejects(
    rawFile({ "unet.w": { ...w16, dtype: "F8" } }, data),
    'tensor "unet.w" has dtype "F8", expected one of',
  );
  rejects(rawFile({ w: { ...w16, dtype: 4 } }, data), 'tensor "w" has dtype 4');
  rejects(rawFile({ w: { shape: [4], data_offsets: [0, 16] } }, data), 'tensor "w" has dtype undefined');
  rejects(rawFile({ w: "F32" }, data), 'tensor "w" has dtype');
  rejects(rawFile({ w: null }, data), 'tensor "w" has dtype');
  rejects(rawFile({ w: { ...w16, dtype: "toString" } }, data), 'tensor "w" has dtype "toString"');
  rejects(
    rawFile({ w: { ...w16, shape: [2, -2] } }, data),
    'tensor "w" has shape [2,-2], expected non-negative',
  );
  rejects(rawFile({ w: { ...w16, shape: [2, 1.5] } }, data), 'tensor "w" has shape [2,1.5]');
  rejects(rawFile({ w: { ...w16, shape: "2x2" } }, data), 'tensor "w" has shape "2x2"');
  rejects(
    rawFile({ w: { ...w16, data_offsets: [0] } }, data),
    'tensor "w" has data_offsets [0], expected [begin, end]',
  );
  rejects(rawFile({ w: { ...w16, data_offsets: [-4, 12] } }, data), 'tensor "w" has data_offsets [-4,12]');
  rejects(rawFile({ w: { ...w16, data_offsets: "0-16" } }, data), 'tensor "w" has data_offsets "0-16"');
});

Deno.test("malformed: data_offsets that do not match dtype x shape", () => {
  const data = new Uint8Array(32);
  rejects(
    rawFile({ w: { ...w16, data_offsets: [0, 12] } }, data),
    'tensor "w": data_offsets [0, 12] span 12 bytes, but F32 [2,2] needs 16',
  );
  rejects(rawFile({ w: { ...w16, dtype: "F16" } }, data), 'tensor "w"', "but F16 [2,2] needs 8");
  rejects(rawFile({ w: { ...w16, data_offsets: [16, 0] } }, data), 'tensor "w": data_offsets [16, 0]');
  // A shape whose size overflows exact integers cannot match any offsets.
  rejects(rawFile({ w: { ...w16, shape: [2 ** 40, 2 ** 40] } }, data), 'tensor "w": data_offsets [0, 16]');
});

Deno.test("malformed: overlapping tensors are named", () => {
  const data = new Uint8Array(48);
  const at = (b: number) => ({ ...w16, data_offsets: [b, b + 16] });
  rejects(rawFile({ a: at(0), b: at(8) }, data), 'tensors "a" [0, 16] and "b" [8, 24] overlap');
  rejects(rawFile({ a: at(16), b: at(16) }, data), "overlap");
  // An overlap hidden behind an empty tensor sorted between the two.
  const big = { dtype: "F32", shape: [12], data_offsets: [0, 48] };
  const empty = { dtype: "F32", shape: [0], data_offsets: [8, 8] };
  rejects(rawFile({ big, empty, small: at(16) }, data), '"big" [0, 48]', '"small" [16, 32]', "overlap");
  // Touching is fine, and empty tensors may sit anywhere.
  const file = readSafetensors(
    rawFile({ a: at(0), b: at(16), e: { ...empty, data_offsets: [4, 4] } }, data),
    SRC,
  );
  assertEquals(file.names().sort(), ["a", "b", "e"]);
});

Deno.test("malformed: truncated data names the tensor", () => {
  const e = rejects(
    rawFile({ w: w16 }, new Uint8Array(12)),
    'tensor "w"',
    "past its end (12 bytes)",
    "truncated",
  );
  assert(e.message.includes("ends at byte 16"), e.message);
  // Cut a written file short.
  const bytes = writeSafetensors({
    a: { dtype: "F32", shape: [4], data: new Float32Array(4) },
    b: { dtype: "F32", shape: [4], data: new Float32Array(4) },
  });
  rejects(bytes.slice(0, bytes.byteLength - 1), 'tensor "b"', "truncated");
});

Deno.test("malformed: __metadata__ must map strings to strings", () => {
  const data = new Uint8Array(16);
  rejects(rawFile({ __metadata__: { n: 1 }, w: w16 }, data), "__metadata__", '"n"');
  rejects(rawFile({ __metadata__: ["pt"], w: w16 }, data), "__metadata__");
  rejects(rawFile({ __metadata__: "pt", w: w16 }, data), "__metadata__");
});

Deno.test("loadSafetensors names the path, for unreadable and malformed files", async () => {
  const dir = await Deno.makeTempDir({ prefix: "safetensors_test_" });
  try {
    const good = `${dir}/good.safetensors`;
    await Deno.writeFile(
      good,
      writeSafetensors({ w: { dtype: "F32", shape: [1], data: new Float32Array([5]) } }),
    );
    assertEquals(Array.from((await loadSafetensors(good)).float32("w")), [5]);
    const bad = `${dir}/bad.safetensors`;
    await Deno.writeFile(bad, rawFile({ w: w16 }, new Uint8Array(4)));
    await assertRejects(() => loadSafetensors(bad), SafetensorsError, `${bad}: tensor "w"`);
    await assertRejects(
      () => loadSafetensors(`${dir}/missing.safetensors`),
      SafetensorsError,
      `${dir}/missing`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
