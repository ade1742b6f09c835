import { assert, assertEquals, assertRejects, assertThrows } from "../testing.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { EngineRunner } from "./runner.ts";
import { parseExecutionProvider } from "./session.ts";
import { Tensor } from "../tensor.ts";

function addModel() {
  const g = new GraphBuilder("add");
  const a = g.input("a", "float32", ["n"]);
  const b = g.input("b", "float32", ["n"]);
  g.output(g.op("Add", [a, b]), "c");
  return { bytes: g.toBytes(), spec: { inputs: g.inputs } };
}

Deno.test("runner runs a graph in the worker thread", async () => {
  const runner = new EngineRunner();
  try {
    const { bytes, spec } = addModel();
    const s = await runner.createSession(bytes, spec, "cpu");
    const out = await s.run({ a: Tensor.f32([2], [1, 2]), b: Tensor.f32([2], [3, 4]) });
    assertEquals(Array.from(out.c.f), [4, 6]);
    await s.release();
  } finally {
    runner.terminate();
  }
});

Deno.test("runner checks inputs by name, dtype and shape before running", async () => {
  const runner = new EngineRunner();
  try {
    const g = new GraphBuilder("id");
    g.output(g.op("Identity", [g.input("x", "float32", [2, 3])]), "y");
    const s = await runner.createSession(g.toBytes(), { inputs: g.inputs });
    const e1 = await assertRejects(() => s.run({}), TypeError);
    assert(e1.message.includes('missing input "x"'), e1.message);
    const e2 = await assertRejects(() => s.run({ x: Tensor.f32([3, 2]) }), TypeError);
    assert(e2.message.includes("expected shape [2, 3], given [3, 2]"), e2.message);
    const e3 = await assertRejects(() => s.run({ x: Tensor.i64([2, 3], [1, 2, 3, 4, 5, 6]) }), TypeError);
    assert(e3.message.includes("expected dtype float32, given int64"), e3.message);
  } finally {
    runner.terminate();
  }
});

Deno.test("the event loop keeps running while the engine works", async () => {
  const runner = new EngineRunner();
  try {
    // A MatMul chain big enough to take a while on a CPU.
    const g = new GraphBuilder("slow");
    let x = g.input("x", "float32", [512, 512]);
    for (let i = 0; i < 40; i++) x = g.op("Tanh", [g.op("MatMul", [x, x])]);
    g.output(x, "y");
    const s = await runner.createSession(g.toBytes(), { inputs: g.inputs });
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const t0 = performance.now();
    await s.run({ x: Tensor.f32([512, 512], new Float32Array(512 * 512).fill(0.001)) });
    const ms = performance.now() - t0;
    clearInterval(timer);
    // If run() blocked this thread, no tick could fire during it.
    assert(ticks >= Math.min(5, ms / 10), `only ${ticks} timer ticks in ${ms.toFixed(0)} ms`);
  } finally {
    runner.terminate();
  }
});

Deno.test("execution provider names are validated", async () => {
  const e = assertThrows(() => parseExecutionProvider("tpu"), RangeError);
  assert(e.message.includes("Should be one of: cpu, cuda, webgpu"));
  const runner = new EngineRunner();
  try {
    const { bytes, spec } = addModel();
    await assertRejects(() => runner.createSession(bytes, spec, "metal"), RangeError, "Should be one of");
  } finally {
    runner.terminate();
  }
});
