/**
 * Each layer in `ops.ts` as a tiny ONNX graph run by ONNX Runtime on the CPU, against the independent
 * plain-TypeScript references in `reference.ts`. Inputs and weights come from seeded `Rng`s.
 *
 * Set OPS_TEST_REPORT=1 to print the largest relative error seen per op.
 */
import { assert, assertClose, assertEquals, relativeError } from "../testing.ts";
import { Rng } from "../random.ts";
import { Tensor } from "../tensor.ts";
import { OrtSession } from "../ort/session.ts";
import { type Dim, GraphBuilder, type Value } from "./builder.ts";
import * as ops from "./ops.ts";
import * as ref from "./reference.ts";

/** Relative-error bound for every op (float32 graph vs float64 reference on float32 inputs). */
const TOL = 1e-5;

const maxErr = new Map<string, number>();

/** Asserts relative error <= TOL and records it under `op`. */
function check(op: string, actual: Tensor, expected: ref.RefTensor, what = ""): void {
  assertEquals(actual.dims, expected.shape, `${op} ${what} shape`);
  const err = relativeError(actual.f, expected.data);
  maxErr.set(op, Math.max(maxErr.get(op) ?? 0, err));
  assertClose(actual.f, expected.data, TOL, `${op} ${what}`);
}

async function run(g: GraphBuilder, feeds: Record<string, Tensor>): Promise<Record<string, Tensor>> {
  const s = await OrtSession.create(g.toBytes(), { inputs: g.inputs }, "cpu");
  try {
    return await s.run(feeds);
  } finally {
    await s.release();
  }
}

function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** A random float32 tensor (normal, times `std`, plus `mean`). */
function randn(rng: Rng, shape: number[], std = 1, mean = 0): Tensor {
  const d = rng.normal(numel(shape), std);
  if (mean) { for (let i = 0; i < d.length; i++) d[i] += mean; }
  return Tensor.f32(shape, d);
}

/** Registers `t` as a float32 initializer. */
function weight(g: GraphBuilder, name: string, t: Tensor): Value {
  return g.initializer(name, { dtype: "float32", dims: t.dims, data: t.f });
}

function asRef(t: Tensor): ref.RefInput {
  return { data: t.f, shape: t.dims };
}

// ---------------------------------------------------------------------------------------------------------
// The references themselves, on hand-computed cases.

Deno.test("reference: erf matches tabulated values to 1e-13", () => {
  const table: [number, number][] = [
    [0, 0],
    [1e-8, 1.1283791670955126e-8],
    [0.1, 0.1124629160182849],
    [0.5, 0.5204998778130465],
    [1, 0.8427007929497149],
    [-1.5, -0.9661051464753108],
    [2, 0.9953222650189527],
    [2.9, 0.9999589021219005],
    [3, 0.9999779095030014],
    [3.5, 0.9999992569016276],
    [-4, -0.9999999845827421],
    [8, 1],
  ];
  for (const [x, v] of table) {
    assert(Math.abs(ref.erf(x) - v) < 1e-13, `erf(${x}) = ${ref.erf(x)}, expected ${v}`);
  }
});

Deno.test("reference: conv2d, linear, softmax and norms on hand-computed cases", () => {
  // 3x3 input, 2x2 kernel of ones, stride 1, padding [0, 0, 1, 1] (bottom/right only).
  const x = { data: [1, 2, 3, 4, 5, 6, 7, 8, 9], shape: [1, 1, 3, 3] };
  const w = { data: [1, 1, 1, 1], shape: [1, 1, 2, 2] };
  const y = ref.conv2d(x, w, [10], { padding: [0, 0, 1, 1] });
  assertEquals(y.shape, [1, 1, 3, 3]);
  assertEquals(Array.from(y.data), [22, 26, 19, 34, 38, 25, 25, 27, 19]);
  // Depthwise (groups = 2), stride 2.
  const y2 = ref.conv2d(
    { data: [1, 2, 3, 4, 10, 20, 30, 40], shape: [1, 2, 2, 2] },
    {
      data: [1, 0, 0, 1, 0, 1, 1, 0],
      shape: [2, 1, 2, 2],
    },
    null,
    { stride: 2, groups: 2 },
  );
  assertEquals(y2.shape, [1, 2, 1, 1]);
  assertEquals(Array.from(y2.data), [5, 50]);
  assertEquals(
    Array.from(
      ref.linear({ data: [1, 2], shape: [1, 2] }, { data: [1, 0, 3, 4], shape: [2, 2] }, [1, -1]).data,
    ),
    [
      2,
      10,
    ],
  );
  const p = ref.softmax({ data: [0, Math.log(3), -Infinity], shape: [3] }).data;
  assertEquals(Array.from(p), [0.25, 0.75, 0]);
  const ln = ref.layerNorm({ data: [1, 3], shape: [1, 2] }, [1, 1], [0, 0], 0).data;
  assertEquals(Array.from(ln), [-1, 1]);
  // Two groups of one channel each: each channel normalized over its own 2 values.
  const gn = ref.groupNorm({ data: [1, 3, 10, 30], shape: [1, 2, 2] }, [1, 2], [0, 5], 2, 0).data;
  assertEquals(Array.from(gn), [-1, 1, 3, 7]);
  assertEquals(Array.from(ref.upsampleNearest2x({ data: [1, 2], shape: [1, 1, 1, 2] }).data), [
    1,
    1,
    2,
    2,
    1,
    1,
    2,
    2,
  ]);
  assertEquals(Array.from(ref.transpose({ data: [1, 2, 3, 4, 5, 6], shape: [2, 3] }, [1, 0]).data), [
    1,
    4,
    2,
    5,
    3,
    6,
  ]);
  // One query, two keys with equal logits: the mean of the values.
  const a = ref.attention({ data: [0, 0], shape: [1, 1, 2] }, { data: [1, 2, 3, 4], shape: [1, 2, 2] }, {
    data: [2, 4, 6, 8],
    shape: [1, 2, 2],
  }, 2);
  assertEquals(Array.from(a.data), [4, 6]);
});

// ---------------------------------------------------------------------------------------------------------
// The graphs against the references.

Deno.test("linear matches x W^T + b, with and without bias", async () => {
  const rng = new Rng(1);
  for (const bias of [true, false]) {
    const g = new GraphBuilder("linear");
    const x = randn(rng, [2, 3, 8]);
    const w = randn(rng, [6, 8], 0.3);
    const b = randn(rng, [6]);
    const xi = g.input("x", "float32", ["batch", "seq", 8]);
    g.output(ops.linear(g, xi, weight(g, "w", w), bias ? weight(g, "b", b) : null), "y");
    const out = await run(g, { x });
    check("linear", out.y, ref.linear(asRef(x), asRef(w), bias ? b.f : null), `bias=${bias}`);
  }
});

interface ConvCase {
  cin: number;
  cout: number;
  k: number;
  stride?: number;
  padding?: number | [number, number, number, number];
  groups?: number;
  bias?: boolean;
  h?: number;
  w?: number;
}

const CONV_CASES: ConvCase[] = [
  { cin: 3, cout: 4, k: 3, padding: 1 },
  { cin: 3, cout: 4, k: 3, padding: 0 },
  { cin: 4, cout: 6, k: 3, stride: 2, padding: 1 },
  { cin: 4, cout: 4, k: 3, stride: 2, padding: [0, 0, 1, 1] }, // diffusers' VAE Downsample2D
  { cin: 4, cout: 4, k: 3, stride: 1, padding: [0, 0, 1, 1], h: 6, w: 6 },
  { cin: 5, cout: 3, k: 1 },
  { cin: 5, cout: 3, k: 1, bias: false },
  { cin: 4, cout: 6, k: 3, padding: 1, groups: 2 },
  { cin: 6, cout: 6, k: 3, stride: 2, padding: 1, groups: 6, bias: false }, // depthwise
  { cin: 8, cout: 4, k: 1, stride: 2, groups: 4 },
];

Deno.test("conv2d: stride 1/2, padding 0/1/asymmetric, groups, kernel 1/3, odd sizes", async () => {
  const rng = new Rng(2);
  for (const c of CONV_CASES) {
    const g = new GraphBuilder("conv");
    const groups = c.groups ?? 1;
    const [h, w] = [c.h ?? 7, c.w ?? 5];
    const x = randn(rng, [2, c.cin, h, w]);
    const wt = randn(rng, [c.cout, c.cin / groups, c.k, c.k], 0.2);
    const b = randn(rng, [c.cout]);
    const useBias = c.bias ?? true;
    const xi = g.input("x", "float32", ["n", c.cin, "h", "w"]);
    const opts = { stride: c.stride, padding: c.padding, groups: c.groups };
    g.output(ops.conv2d(g, xi, weight(g, "w", wt), useBias ? weight(g, "b", b) : null, opts), "y");
    const out = await run(g, { x });
    check("conv2d", out.y, ref.conv2d(asRef(x), asRef(wt), useBias ? b.f : null, opts), JSON.stringify(c));
  }
});

Deno.test("groupNorm: several group counts, non-square spatial size, offset inputs, dynamic shapes", async () => {
  const rng = new Rng(3);
  const cases: { shape: number[]; groups: number; eps: number }[] = [
    { shape: [2, 8, 3, 5], groups: 1, eps: 1e-5 },
    { shape: [2, 8, 3, 5], groups: 2, eps: 1e-5 },
    { shape: [2, 8, 3, 5], groups: 4, eps: 1e-6 },
    { shape: [1, 8, 5, 3], groups: 8, eps: 1e-6 }, // = instance norm
    { shape: [3, 12, 4, 6], groups: 3, eps: 1e-5 },
    { shape: [2, 6, 1, 1], groups: 2, eps: 1e-5 }, // group variance over channels only
  ];
  for (const c of cases) {
    const ch = c.shape[1];
    const g = new GraphBuilder("gn");
    // Mean 3, std 2: the normalization has something to remove.
    const x = randn(rng, c.shape, 2, 3);
    const gamma = randn(rng, [ch], 0.5, 1);
    const beta = randn(rng, [ch], 0.5);
    const xi = g.input("x", "float32", ["n", ch, "h", "w"]);
    g.output(
      ops.groupNorm(g, xi, weight(g, "gamma", gamma), weight(g, "beta", beta), c.groups, ch, c.eps),
      "y",
    );
    const out = await run(g, { x });
    check("groupNorm", out.y, ref.groupNorm(asRef(x), gamma.f, beta.f, c.groups, c.eps), JSON.stringify(c));
  }
});

Deno.test("groupNorm on a rank-3 input [N, C, L]", async () => {
  const rng = new Rng(31);
  for (const n of [1, 2]) {
    const g = new GraphBuilder("gn3");
    const x = randn(rng, [n, 6, 10], 1.5, -1);
    const gamma = randn(rng, [6], 0.5, 1);
    const beta = randn(rng, [6], 0.5);
    const xi = g.input("x", "float32", [n, 6, 10]);
    g.output(ops.groupNorm(g, xi, weight(g, "gamma", gamma), weight(g, "beta", beta), 3, 6, 1e-5), "y");
    const out = await run(g, { x });
    check("groupNorm", out.y, ref.groupNorm(asRef(x), gamma.f, beta.f, 3, 1e-5), `rank 3, n=${n}`);
  }
});

Deno.test("layerNorm over the last axis", async () => {
  const rng = new Rng(4);
  for (const [shape, eps] of [[[2, 5, 16], 1e-5], [[3, 7], 1e-6]] as [number[], number][]) {
    const d = shape[shape.length - 1];
    const g = new GraphBuilder("ln");
    const x = randn(rng, shape, 3, -2);
    const gamma = randn(rng, [d], 0.5, 1);
    const beta = randn(rng, [d], 0.5);
    const xi = g.input("x", "float32", shape.map((s, i) => (i === shape.length - 1 ? s : `d${i}`)) as Dim[]);
    g.output(ops.layerNorm(g, xi, weight(g, "gamma", gamma), weight(g, "beta", beta), eps), "y");
    const out = await run(g, { x });
    check("layerNorm", out.y, ref.layerNorm(asRef(x), gamma.f, beta.f, eps), JSON.stringify(shape));
  }
});

Deno.test("activations: silu, gelu (exact erf), quickGelu", async () => {
  const rng = new Rng(5);
  // A sweep over [-8, 8] plus wide random values.
  const sweep = Array.from({ length: 161 }, (_, i) => -8 + i / 10);
  const x = Tensor.f32([sweep.length + 256], [...sweep, ...rng.normal(256, 3)]);
  const acts = [
    ["silu", ops.silu, ref.silu],
    ["gelu", ops.gelu, ref.gelu],
    ["quickGelu", ops.quickGelu, ref.quickGelu],
  ] as const;
  for (const [name, op, reference] of acts) {
    const g = new GraphBuilder(name);
    g.output(op(g, g.input("x", "float32", ["n"])), "y");
    const out = await run(g, { x });
    check(name, out.y, { data: reference(x.f), shape: x.dims });
  }
});

Deno.test("upsampleNearest2x repeats each pixel into a 2x2 block", async () => {
  const rng = new Rng(6);
  const g = new GraphBuilder("up");
  const x = randn(rng, [2, 3, 3, 5]);
  g.output(ops.upsampleNearest2x(g, g.input("x", "float32", ["n", 3, "h", "w"])), "y");
  const out = await run(g, { x });
  check("upsampleNearest2x", out.y, ref.upsampleNearest2x(asRef(x)));
  assertEquals(Array.from(out.y.f), Array.from(ref.upsampleNearest2x(asRef(x)).data, Math.fround));
});

Deno.test("chunk splits into equal parts along an axis", async () => {
  const rng = new Rng(7);
  const x = randn(rng, [2, 6, 4]);
  for (const [n, axis] of [[3, 1], [2, -1], [2, 0]]) {
    const g = new GraphBuilder("chunk");
    const parts = ops.chunk(g, g.input("x", "float32", [2, 6, 4]), n, axis);
    assertEquals(parts.length, n);
    parts.forEach((p, i) => g.output(p, `p${i}`));
    const out = await run(g, { x });
    const expected = ref.chunk(asRef(x), n, axis);
    for (let i = 0; i < n; i++) {
      assertEquals(out[`p${i}`].dims, expected[i].shape);
      assertEquals(
        Array.from(out[`p${i}`].f),
        Array.from(expected[i].data),
        `chunk ${n} axis ${axis} part ${i}`,
      );
    }
    maxErr.set("chunk", 0);
  }
});

Deno.test("toSequence / fromSequence: layout and round trip", async () => {
  const rng = new Rng(8);
  const g = new GraphBuilder("seq");
  const x = randn(rng, [2, 4, 3, 5]);
  const xi = g.input("x", "float32", ["n", 4, "h", "w"]);
  const seq = ops.toSequence(g, xi, 4);
  g.output(seq, "seq");
  g.output(ops.fromSequence(g, seq, xi), "back");
  // A sequence with a different channel count (as after a projection) takes only N, H, W from `like`.
  const w = randn(rng, [6, 4], 0.5);
  g.output(ops.fromSequence(g, ops.linear(g, seq, weight(g, "w", w)), xi), "projected");
  const out = await run(g, { x });
  const expectedSeq = ref.toSequence(asRef(x));
  assertEquals(out.seq.dims, [2, 15, 4]);
  assertEquals(Array.from(out.seq.f), Array.from(expectedSeq.data));
  assertEquals(out.back.dims, x.dims);
  assertEquals(Array.from(out.back.f), Array.from(x.f));
  check(
    "fromSequence",
    out.projected,
    ref.fromSequence(ref.linear(expectedSeq, asRef(w)), 3, 5),
    "6 channels",
  );
  maxErr.set("toSequence", 0);
});

/** Top-left-aligned causal mask [lq, lk] (query i sees keys j <= i), as torch's tril(ones(lq, lk)). */
function causalMask(lq: number, lk: number, masked: number): Float32Array {
  const m = new Float32Array(lq * lk);
  for (let i = 0; i < lq; i++) for (let j = i + 1; j < lk; j++) m[i * lk + j] = masked;
  return m;
}

Deno.test("attention: heads 1 and 4, Lq != Lk, causal and padding masks", async () => {
  const rng = new Rng(9);
  const F32_MIN = -3.4028234663852886e38; // torch.finfo(torch.float32).min, as CLIP's causal mask
  const cases: {
    b: number;
    heads: number;
    d: number;
    lq: number;
    lk: number;
    mask?: "causal" | "padding";
  }[] = [
    { b: 2, heads: 1, d: 8, lq: 6, lk: 6 },
    { b: 2, heads: 4, d: 4, lq: 5, lk: 7 },
    { b: 1, heads: 4, d: 8, lq: 9, lk: 3 },
    { b: 1, heads: 1, d: 16, lq: 4, lk: 9 },
    { b: 2, heads: 1, d: 8, lq: 6, lk: 6, mask: "causal" },
    { b: 2, heads: 4, d: 4, lq: 5, lk: 7, mask: "causal" },
    { b: 2, heads: 4, d: 4, lq: 7, lk: 5, mask: "causal" },
    { b: 2, heads: 4, d: 4, lq: 5, lk: 7, mask: "padding" },
  ];
  for (const c of cases) {
    const hd = c.heads * c.d;
    const g = new GraphBuilder("attn");
    const q = randn(rng, [c.b, c.lq, hd]);
    const k = randn(rng, [c.b, c.lk, hd]);
    const v = randn(rng, [c.b, c.lk, hd]);
    const qi = g.input("q", "float32", ["b", "lq", hd]);
    const ki = g.input("k", "float32", ["b", "lk", hd]);
    const vi = g.input("v", "float32", ["b", "lk", hd]);
    let mask: ref.RefInput | undefined;
    let maskValue: Value | undefined;
    if (c.mask === "causal") {
      mask = { data: causalMask(c.lq, c.lk, F32_MIN), shape: [1, 1, c.lq, c.lk] };
      maskValue = g.constant(mask.data as Float32Array, [1, 1, c.lq, c.lk]);
    } else if (c.mask === "padding") {
      // Per-sample key padding [B, 1, 1, Lk] fed as an input: sample 0 masks its last 2 keys with -inf.
      const m = new Float32Array(c.b * c.lk);
      m[c.lk - 1] = m[c.lk - 2] = -Infinity;
      mask = { data: m, shape: [c.b, 1, 1, c.lk] };
      maskValue = g.input("mask", "float32", [c.b, 1, 1, c.lk]);
    }
    g.output(ops.attention(g, qi, ki, vi, c.heads, c.d, maskValue), "o");
    const feeds: Record<string, Tensor> = { q, k, v };
    if (c.mask === "padding") feeds.mask = Tensor.f32(mask!.shape as number[], mask!.data as Float32Array);
    const out = await run(g, feeds);
    check("attention", out.o, ref.attention(asRef(q), asRef(k), asRef(v), c.heads, mask), JSON.stringify(c));
  }
});

Deno.test("attention with a 2-D [Lq, Lk] mask broadcast over batch and heads", async () => {
  const rng = new Rng(10);
  const [b, heads, d, lq, lk] = [2, 2, 4, 4, 6];
  const g = new GraphBuilder("attn2d");
  const q = randn(rng, [b, lq, heads * d]);
  const k = randn(rng, [b, lk, heads * d]);
  const m = Tensor.f32([lq, lk], causalMask(lq, lk, -1e4));
  for (let i = 0; i < m.size; i++) if (m.f[i] === 0) m.f[i] = rng.normal(1)[0]; // an arbitrary additive bias
  const qi = g.input("q", "float32", [b, lq, heads * d]);
  const ki = g.input("k", "float32", [b, lk, heads * d]);
  // Self-consistency: k doubles as v.
  g.output(ops.attention(g, qi, ki, ki, heads, d, g.input("mask", "float32", [lq, lk])), "o");
  const out = await run(g, { q, k, mask: m });
  check("attention", out.o, ref.attention(asRef(q), asRef(k), asRef(k), heads, asRef(m)), "2-D mask");
});

Deno.test("report the largest relative error per op", () => {
  if (Deno.env.get("OPS_TEST_REPORT")) {
    for (const [op, e] of [...maxErr].sort()) console.log(`${op.padEnd(20)} ${e.toExponential(2)}`);
  }
  for (const [op, e] of maxErr) assert(e <= TOL, `${op}: ${e}`);
});
