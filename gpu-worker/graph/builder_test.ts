/**
 * GraphBuilder: ONNX functions for subgraph reuse, external data, scoped node names, name uniqueness, the
 * protobuf size guard, and dtype inference.
 */
import { assert, assertClose, assertEquals, assertThrows } from "../testing.ts";
import { Rng } from "../random.ts";
import { Tensor } from "../tensor.ts";
import { OrtSession } from "../ort/session.ts";
import { FUNCTION_DOMAIN, GraphBuilder, onnx, type Value } from "./builder.ts";
import * as ops from "./ops.ts";
import * as ref from "./reference.ts";

async function run(model: Uint8Array | string, g: GraphBuilder, feeds: Record<string, Tensor>) {
  const s = await OrtSession.create(model, { inputs: g.inputs }, "cpu");
  try {
    return await s.run(feeds);
  } finally {
    await s.release();
  }
}

/** Decodes serialized bytes back into a ModelProto (protobufjs message). */
// deno-lint-ignore no-explicit-any
function decode(bytes: Uint8Array): any {
  return onnx.ModelProto.decode(bytes);
}

function f32(g: GraphBuilder, name: string, dims: number[], data: Float32Array): Value {
  return g.initializer(name, { dtype: "float32", dims, data });
}

/** linear -> gelu -> + 0.25 -> silu: uses anonymous constants, so the function body must lift them. */
function block(g: GraphBuilder, x: Value, w: Value): Value {
  const h = ops.gelu(g, ops.linear(g, x, w));
  return ops.silu(g, g.op("Add", [h, g.scalar(0.25)]));
}

Deno.test("defineFunction: two calls compute what the inline ops compute, with one FunctionProto", async () => {
  const rng = new Rng(11);
  const w1 = rng.normal(8 * 8, 0.4);
  const w2 = rng.normal(8 * 8, 0.4);
  const x = Tensor.f32([3, 8], rng.normal(24));

  const inline = new GraphBuilder("inline");
  {
    const xi = inline.input("x", "float32", ["n", 8]);
    const h = block(inline, xi, f32(inline, "w1", [8, 8], w1));
    inline.output(block(inline, h, f32(inline, "w2", [8, 8], w2)), "y");
  }

  const fn = new GraphBuilder("fn");
  {
    const xi = fn.input("x", "float32", ["n", 8]);
    const f = fn.defineFunction("block", ["x", "w"], (sub, a, w) => [block(sub, a, w)]);
    const [h] = f(xi, f32(fn, "w1", [8, 8], w1));
    const [y] = f(h, f32(fn, "w2", [8, 8], w2));
    fn.output(y, "y");
  }

  const model = decode(fn.toBytes());
  assertEquals(model.functions.length, 1);
  const proto = model.functions[0];
  assertEquals([proto.name, proto.domain], ["block", FUNCTION_DOMAIN]);
  assertEquals(proto.input, ["x", "w"]);
  // The body's scalars became Constant nodes (functions hold no initializers) ...
  assert(
    proto.node.some((n: { opType: string }) => n.opType === "Constant"),
    "no Constant node in the function",
  );
  // ... and did not leak into the main graph, which holds only the two weights and two calls.
  assertEquals(model.graph.initializer.map((t: { name: string }) => t.name).sort(), ["w1", "w2"]);
  const calls = model.graph.node.filter((n: { opType: string }) => n.opType === "block");
  assertEquals(calls.length, 2);
  assert(calls.every((n: { domain: string }) => n.domain === FUNCTION_DOMAIN));
  assert(
    model.opsetImport.some((o: { domain: string }) => o.domain === FUNCTION_DOMAIN),
    "the function domain is not imported",
  );

  const a = await run(inline.toBytes(), inline, { x });
  const b = await run(fn.toBytes(), fn, { x });
  assertEquals(b.y.dims, [3, 8]);
  assertClose(b.y.f, a.y.f, 1e-6, "function vs inline");
  // And both against the plain-TypeScript reference.
  const step = (v: ref.RefInput, w: Float32Array) => {
    const h = ref.gelu(ref.linear(v, { data: w, shape: [8, 8] }).data);
    return { data: ref.silu(h.map((e) => e + 0.25)), shape: [3, 8] };
  };
  assertClose(b.y.f, step(step({ data: x.f, shape: [3, 8] }, w1), w2).data, 1e-5, "function vs reference");
});

Deno.test("defineFunction with several outputs", async () => {
  const g = new GraphBuilder("multi");
  const x = g.input("x", "float32", [2, 4]);
  const split = g.defineFunction("halves", ["t"], (sub, t) => ops.chunk(sub, t, 2, -1));
  const [lo, hi] = split(x);
  g.output(g.op("Sub", [hi, lo]), "d");
  assertEquals(decode(g.toBytes()).functions[0].output.length, 2);
  const out = await run(g.toBytes(), g, { x: Tensor.f32([2, 4], [1, 2, 5, 7, 10, 20, 40, 80]) });
  assertEquals(Array.from(out.d.f), [4, 5, 30, 60]);
});

Deno.test("saveModel: large weights go to <name>.onnx.data, 64-byte aligned, and ORT loads the path", async () => {
  const rng = new Rng(12);
  const dir = await Deno.makeTempDir({ prefix: "builder_test_" });
  try {
    const g = new GraphBuilder("ext");
    const w1 = rng.normal(67 * 5, 0.5); // 1340 bytes: external, and not a multiple of 64
    const b1 = rng.normal(67); // 268 bytes: stays inline
    const w2 = rng.normal(64 * 67, 0.2); // 17152 bytes: external
    const b2 = rng.normal(64);
    const xi = g.input("x", "float32", ["n", 5]);
    const h = ops.linear(g, xi, f32(g, "w1", [67, 5], w1), f32(g, "b1", [67], b1));
    g.output(ops.linear(g, h, f32(g, "w2", [64, 67], w2), f32(g, "b2", [64], b2)), "y");

    const path = await g.saveModel(dir);
    assertEquals(path, `${dir}/ext.onnx`);
    const modelBytes = await Deno.readFile(path);
    const data = await Deno.readFile(`${dir}/ext.onnx.data`);
    assert(modelBytes.byteLength < 2048, `the .onnx file is ${modelBytes.byteLength} bytes`);
    assertEquals(data.byteLength, 1344 + 17152); // w1, padding to 64, w2

    const model = decode(modelBytes);
    // deno-lint-ignore no-explicit-any
    const inits = new Map<string, any>(model.graph.initializer.map((t: { name: string }) => [t.name, t]));
    const ext = (name: string) =>
      Object.fromEntries(
        inits.get(name).externalData.map((e: { key: string; value: string }) => [e.key, e.value]),
      );
    for (const [name, arr, offset] of [["w1", w1, 0], ["w2", w2, 1344]] as const) {
      const t = inits.get(name);
      assertEquals(t.dataLocation, 1, `${name} dataLocation`);
      assertEquals(t.rawData.length, 0, `${name} rawData`);
      const e = ext(name);
      assertEquals(e, { location: "ext.onnx.data", offset: String(offset), length: String(arr.byteLength) });
      assertEquals(offset % 64, 0);
      const stored = new Float32Array(data.slice(offset, offset + arr.byteLength).buffer);
      assertEquals(Array.from(stored), Array.from(arr), `${name} bytes in the data file`);
    }
    for (const name of ["b1", "b2"]) {
      assertEquals(inits.get(name).externalData.length, 0, `${name} is inline`);
      assertEquals(inits.get(name).rawData.length, name === "b1" ? 268 : 256);
    }

    const x = Tensor.f32([2, 5], rng.normal(10));
    const out = await run(path, g, { x });
    const h1 = ref.linear({ data: x.f, shape: [2, 5] }, { data: w1, shape: [67, 5] }, b1);
    assertClose(out.y.f, ref.linear(h1, { data: w2, shape: [64, 67] }, b2).data, 1e-5, "external-data model");

    // A custom file name names the data file after it.
    const custom = await g.saveModel(`${dir}/sub`, "custom.onnx");
    assertEquals(custom, `${dir}/sub/custom.onnx`);
    assertEquals((await Deno.stat(`${dir}/sub/custom.onnx.data`)).size, data.byteLength);
    assertClose((await run(custom, g, { x })).y.f, out.y.f, 0, "custom name");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("toModelProto respects the external-data threshold", () => {
  const g = new GraphBuilder("thr");
  g.output(g.op("Add", [g.input("x", "float32", [256]), f32(g, "w", [256], new Float32Array(256))]), "y");
  const count = (threshold: number) =>
    g.toModelProto({ externalData: "thr.onnx.data", threshold }).model.graph.initializer.filter((
      t: { dataLocation?: number },
    ) => t.dataLocation === 1).length;
  assertEquals(count(1024), 0); // exactly 1024 bytes: not above the threshold
  assertEquals(count(1023), 1);
  assertEquals(g.toModelProto().external.length, 0); // no external data unless asked
});

Deno.test("scopes name nodes and values after the module path", () => {
  const g = new GraphBuilder("scoped");
  const x = g.input("x", "float32", [1]);
  let inner: Value | undefined;
  g.scope("down_blocks", () =>
    g.scope(0, () =>
      g.scope("resnets", () =>
        g.scope(1, () => {
          assertEquals(g.path(), "down_blocks.0.resnets.1");
          assertEquals(g.path("conv1"), "down_blocks.0.resnets.1.conv1");
          inner = g.op("Relu", [x]);
        }))));
  const outer = g.op("Neg", [inner!]);
  g.output(outer, "y");
  assertEquals(g.path(), "");
  assert(inner!.name.startsWith("down_blocks.0.resnets.1/Relu_"), inner!.name);
  assert(outer.name.startsWith("g/Neg_"), outer.name);
  const nodes = decode(g.toBytes()).graph.node;
  assert(nodes[0].name.startsWith("down_blocks.0.resnets.1/Relu_node_"), nodes[0].name);
  assert(nodes[1].name.startsWith("g/Neg_node_"), nodes[1].name);
  // The scope is popped even when the body throws.
  assertThrows(
    () =>
      g.scope("broken", () => {
        throw new Error("boom");
      }),
    Error,
    "boom",
  );
  assertEquals(g.path(), "");
  // Node and value names are all distinct.
  const names = [
    ...nodes.map((n: { name: string }) => n.name),
    ...nodes.flatMap((n: { output: string[] }) => n.output),
  ];
  assertEquals(new Set(names).size, names.length);
});

Deno.test("duplicate value names are refused", () => {
  const g = new GraphBuilder("dups");
  const x = g.input("x", "float32", [2]);
  assertThrows(() => g.input("x", "float32", [2]), Error, 'graph "dups": value name "x" is already used');
  assertThrows(() => f32(g, "x", [2], new Float32Array(2)), Error, 'value name "x" is already used');
  f32(g, "w", [2], new Float32Array(2));
  assertThrows(() => f32(g, "w", [2], new Float32Array(2)), Error, 'value name "w" is already used');
  g.op("Relu", [x], {}, { name: "r" });
  assertThrows(() => g.op("Relu", [x], {}, { name: "r" }), Error, 'value name "r" is already used');
  assertThrows(() => g.output(x, "w"), Error, 'value name "w" is already used');
  g.output(x, "y");
  assertThrows(() => g.output(x, "y"), Error, 'value name "y" is already used');
});

Deno.test("toBytes refuses weights over protobuf's 2 GB and points at saveModel", () => {
  const g = new GraphBuilder("huge");
  // Seven views of one 256 MiB buffer: 1.88e9 bytes counted, 256 MiB (untouched, so lazily backed) allocated.
  const shared = new Uint8Array(2 ** 28);
  for (let i = 0; i < 7; i++) g.initializer(`w${i}`, { dtype: "uint8", dims: [shared.length], data: shared });
  assertEquals(g.initializerBytes(), 7 * 2 ** 28);
  const e = assertThrows(() => g.toBytes(), RangeError);
  assertEquals(
    e.message,
    `graph "huge" holds ${7 * 2 ** 28} bytes of weights, over protobuf's 2 GB; use saveModel()`,
  );
});

Deno.test("output dtypes are inferred per op", () => {
  const g = new GraphBuilder("dtypes");
  const x = g.input("x", "float32", [2]);
  assertEquals(g.op("Shape", [x]).dtype, "int64");
  assertEquals(g.op("Less", [x, x]).dtype, "bool");
  assertEquals(g.op("Cast", [x], { to: 7 }).dtype, "int64");
  assertEquals(g.op("Cast", [x], { to: 10 }).dtype, "float16");
  assertEquals(g.op("Where", [g.op("Less", [x, x]), x, x]).dtype, "float32");
  assertEquals(g.op("Relu", [x]).dtype, "float32");
  assertEquals(g.op("Relu", [x], {}, { dtype: "float16" }).dtype, "float16");
  assertEquals(g.ints([1, 2]).dtype, "int64");
  assertThrows(() => g.constant([1], [1], "float16"), TypeError, "float16");
});
