/**
 * Every gradient rule in `GRADIENT_RULES` against central finite differences (`gradcheck.ts`), on random
 * inputs: broadcasting both ways and across ranks, symbolic shapes that send `sumToShape` and Concat down
 * their runtime paths, every Conv geometry the architectures use, and the composite layers of `ops.ts` end to
 * end. Plus the autodiff's contract: clear errors, and no backward work for branches that do not need it.
 *
 * Set GRADCHECK_REPORT=1 to print the worst relative error seen per rule (=verbose: every case's report).
 */
import { assert, assertThrows } from "../testing.ts";
import { Rng } from "../random.ts";
import { Tensor } from "../tensor.ts";
import { type Dim, GraphBuilder, type Value } from "./builder.ts";
import { appendBackward, NoGradientError } from "./autodiff.ts";
import { GRADIENT_RULES, type GradRule } from "./grad_rules.ts";
import { gradcheck, type GradcheckOptions } from "./gradcheck.ts";
import * as ops from "./ops.ts";

type Gen = (rng: Rng, n: number) => Float32Array;

const normal: Gen = (rng, n) => rng.normal(n);
/** Uniform in [0.5, 2): for Sqrt, Log, Reciprocal and divisors. */
const positive: Gen = (rng, n) => Float32Array.from({ length: n }, () => 0.5 + 1.5 * rng.uniform());
/** |x| in [0.2, 1.4) with a random sign: away from the kinks of Relu and Abs at 0. */
const awayFromZero: Gen = (rng, n) =>
  Float32Array.from({ length: n }, () => (rng.uniform() < 0.5 ? -1 : 1) * (0.2 + 1.2 * rng.uniform()));
/** Normal times 3: logits with some spread. */
const wide: Gen = (rng, n) => rng.normal(n, 3);

interface In {
  dims: number[];
  gen?: Gen;
  /** Declared shape (symbolic dims) when it differs from `dims`. */
  declared?: Dim[];
  /** Not differentiated (fed only). */
  frozen?: boolean;
}

interface Case {
  /** The rule (or composite layer) under test. */
  op: string;
  name: string;
  inputs: Record<string, In>;
  build: (g: GraphBuilder, x: Record<string, Value>) => Value;
  /** Op types the backward pass must contain (e.g. the runtime fallback's NonZero). */
  backward?: string[];
  options?: Partial<GradcheckOptions>;
}

const CASES: Case[] = [];
/** Worst relative error per rule, for the report. */
const worst = new Map<string, number>();
/** Every case's worst relative error stays below this (tighter than the per-coordinate tolerances). */
const WORST_BOUND = 5e-3;

function gc(
  op: string,
  name: string,
  inputs: Record<string, In>,
  build: Case["build"],
  extra: Partial<Pick<Case, "backward" | "options">> = {},
) {
  CASES.push({ op, name, inputs, build, ...extra });
}

const i = (dims: number[], gen: Gen = normal, declared?: Dim[]): In => ({ dims, gen, declared });
const frozen = (dims: number[], gen: Gen = normal): In => ({ dims, gen, frozen: true });

// ---------------------------------------------------------------------------------------------------------
// Elementwise arithmetic with broadcasting.

gc("Identity", "[3, 4]", { x: i([3, 4]) }, (g, { x }) => g.op("Identity", [x]));

for (const op of ["Add", "Sub", "Mul", "Div"]) {
  const b = op === "Div" ? positive : normal;
  const bin = (g: GraphBuilder, { a, b }: Record<string, Value>) => g.op(op, [a, b]);
  gc(op, "same shape", { a: i([2, 3]), b: i([2, 3], b) }, bin);
  gc(op, "b [3] into a [2, 3] (rank difference)", { a: i([2, 3]), b: i([3], b) }, bin);
  gc(op, "a [4] into b [2, 3, 4] (rank difference, first operand)", { a: i([4]), b: i([2, 3, 4], b) }, bin);
  gc(op, "both ways: [2, 1, 4] and [3, 1]", { a: i([2, 1, 4]), b: i([3, 1], b) }, bin);
  gc(op, "scalar b", { a: i([2, 3]), b: i([], b) }, bin);
  gc(
    op,
    "symbolic dims, both ways (runtime sumToShape)",
    { a: i([2, 1], normal, ["s0", "s1"]), b: i([1, 3], b, ["t0", "t1"]) },
    bin,
    { backward: ["NonZero"] },
  );
  gc(
    op,
    "symbolic dims, rank difference (runtime sumToShape)",
    { a: i([2, 3, 4], normal, ["n", 3, 4]), b: i([1], b, ["m"]) },
    bin,
    { backward: ["NonZero"] },
  );
}

// ---------------------------------------------------------------------------------------------------------
// Unary functions.

const unary: [string, Gen][] = [
  ["Neg", normal],
  ["Sqrt", positive],
  ["Exp", normal],
  ["Log", positive],
  ["Reciprocal", positive],
  ["Sigmoid", wide],
  ["Tanh", normal],
  ["Relu", awayFromZero],
  ["Abs", awayFromZero],
  ["Erf", normal],
  ["Sin", wide],
  ["Cos", wide],
];
for (const [op, gen] of unary) gc(op, "[2, 3, 4]", { x: i([2, 3, 4], gen) }, (g, { x }) => g.op(op, [x]));
gc(
  "Reciprocal",
  "negative inputs",
  { x: i([2, 5], (rng, n) => positive(rng, n).map((v) => -v)) },
  (g, { x }) => g.op("Reciprocal", [x]),
);

for (const e of [2, 3]) {
  gc("Pow", `exponent ${e}`, { x: i([3, 4]) }, (g, { x }) => g.op("Pow", [x, g.scalar(e)]));
}
gc(
  "Pow",
  "exponent 1.5 (positive base)",
  { x: i([3, 4], positive) },
  (g, { x }) => g.op("Pow", [x, g.scalar(1.5)]),
);

gc("Cast", "float32 -> float32", { x: i([3, 4]) }, (g, { x }) => g.op("Cast", [x], { to: 1 }));
gc(
  "Cast",
  "float32 -> float64 -> float32",
  { x: i([3, 4]) },
  (g, { x }) => g.op("Cast", [g.op("Exp", [g.op("Cast", [x], { to: 11 })])], { to: 1 }),
);

/** Values away from the bounds -1 and 1.5 (and from each other's neighbourhoods). */
const clipGen: Gen = (rng, n) =>
  Float32Array.from(
    { length: n },
    (_, k) => [-2.5, -1.6, -0.6, 0.2, 0.9, 2, 3.1][k % 7] + 0.2 * rng.uniform(),
  );
gc(
  "Clip",
  "min and max",
  { x: i([3, 7], clipGen) },
  (g, { x }) => g.op("Clip", [x, g.scalar(-1), g.scalar(1.5)]),
);
gc("Clip", "max only", { x: i([3, 7], clipGen) }, (g, { x }) => g.op("Clip", [x, null, g.scalar(1.5)]));
gc("Clip", "min only", { x: i([3, 7], clipGen) }, (g, { x }) => g.op("Clip", [x, g.scalar(-1)]));

const cond = (g: GraphBuilder, dims: number[], seed: number) => {
  const rng = new Rng(seed);
  const n = dims.reduce((a, b) => a * b, 1);
  return g.constant(Array.from({ length: n }, () => (rng.uniform() < 0.5 ? 1 : 0)), dims, "bool");
};
gc(
  "Where",
  "same shapes",
  { a: i([2, 3]), b: i([2, 3]) },
  (g, { a, b }) => g.op("Where", [cond(g, [2, 3], 1), a, b]),
);
gc(
  "Where",
  "a [3] and b [2, 1] broadcast against cond [2, 3]",
  { a: i([3]), b: i([2, 1]) },
  (g, { a, b }) => g.op("Where", [cond(g, [2, 3], 2), a, b]),
);
gc(
  "Where",
  "cond [3] broadcast against a [2, 3]",
  { a: i([2, 3]), b: i([]) },
  (g, { a, b }) => g.op("Where", [cond(g, [3], 3), a, b]),
);

// ---------------------------------------------------------------------------------------------------------
// MatMul.

const matmul = (g: GraphBuilder, { a, b }: Record<string, Value>) => g.op("MatMul", [a, b]);
gc("MatMul", "2-D", { a: i([3, 4]), b: i([4, 5]) }, matmul);
gc("MatMul", "batched 3-D", { a: i([2, 3, 4]), b: i([2, 4, 5]) }, matmul);
gc("MatMul", "batched 4-D", { a: i([2, 2, 3, 4]), b: i([2, 2, 4, 3]) }, matmul);
gc("MatMul", "broadcast batch: [2, 3, 4] x [4, 5]", { a: i([2, 3, 4]), b: i([4, 5]) }, matmul);
gc("MatMul", "broadcast batch: [3, 4] x [2, 4, 5]", { a: i([3, 4]), b: i([2, 4, 5]) }, matmul);
gc(
  "MatMul",
  "broadcast batch both ways: [2, 1, 3, 4] x [3, 4, 2]",
  { a: i([2, 1, 3, 4]), b: i([3, 4, 2]) },
  matmul,
);
gc(
  "MatMul",
  "symbolic batch: [b, 3, 4] x [4, 5]",
  { a: i([2, 3, 4], normal, ["b", 3, 4]), b: i([4, 5]) },
  matmul,
);
gc(
  "MatMul",
  "symbolic inner dim: [2, 3, r] x [r, 4] (LoRA)",
  { a: i([2, 3, 2], normal, [2, 3, "r"]), b: i([2, 4], normal, ["r", 4]) },
  matmul,
);

// ---------------------------------------------------------------------------------------------------------
// Layout ops.

gc(
  "Transpose",
  "perm [2, 0, 1]",
  { x: i([2, 3, 4]) },
  (g, { x }) => g.op("Transpose", [x], { perm: [2, 0, 1] }),
);
gc("Transpose", "default perm (reverse)", { x: i([2, 3, 4]) }, (g, { x }) => g.op("Transpose", [x]));
gc("Reshape", "[2, 3, 4] -> [6, 4]", { x: i([2, 3, 4]) }, (g, { x }) => g.op("Reshape", [x, g.ints([6, 4])]));
gc("Reshape", "with 0 and -1", { x: i([2, 3, 4]) }, (g, { x }) => g.op("Reshape", [x, g.ints([0, -1, 2])]));
gc(
  "Reshape",
  "symbolic batch",
  { x: i([2, 3, 4], normal, ["b", 3, 4]) },
  (g, { x }) => g.op("Reshape", [x, g.ints([0, 12])]),
);
gc("Unsqueeze", "axes [0, 3]", { x: i([2, 3]) }, (g, { x }) => g.op("Unsqueeze", [x, g.ints([0, 3])]));
gc("Squeeze", "axes [1, 3]", { x: i([2, 1, 3, 1]) }, (g, { x }) => g.op("Squeeze", [x, g.ints([1, 3])]));
gc("Squeeze", "no axes", { x: i([2, 1, 3, 1]) }, (g, { x }) => g.op("Squeeze", [x]));
gc("Flatten", "axis 1", { x: i([2, 3, 4]) }, (g, { x }) => g.op("Flatten", [x], { axis: 1 }));
gc(
  "Flatten",
  "axis 2, then MatMul (needs Flatten's shape)",
  { x: i([2, 3, 4]), w: i([4, 3]) },
  (g, { x, w }) => g.op("MatMul", [g.op("Flatten", [x], { axis: 2 }), w]),
);
gc(
  "Flatten",
  "symbolic batch, axis 1",
  { x: i([2, 3, 4], normal, ["b", 3, 4]), w: i([12, 2]) },
  (g, { x, w }) => g.op("MatMul", [g.op("Flatten", [x], { axis: 1 }), w]),
);
gc("Expand", "[3, 1] -> [2, 3, 4]", { x: i([3, 1]) }, (g, { x }) => g.op("Expand", [x, g.ints([2, 3, 4])]));
gc("Expand", "[1] -> [2, 3]", { x: i([1]) }, (g, { x }) => g.op("Expand", [x, g.ints([2, 3])]));
gc("Expand", "[2, 3] -> [2, 3] (no-op)", { x: i([2, 3]) }, (g, { x }) => g.op("Expand", [x, g.ints([2, 3])]));

gc(
  "Concat",
  "static, axis 1",
  { a: i([2, 3]), b: i([2, 2]) },
  (g, { a, b }) => g.op("Concat", [a, b], { axis: 1 }),
);
gc("Concat", "static, three inputs, axis -1", { a: i([2, 2, 1]), b: i([2, 2, 3]), c: i([2, 2, 2]) }, (
  g,
  { a, b, c },
) => g.op("Concat", [a, b, c], { axis: -1 }));
gc("Concat", "one input used twice", { a: i([2, 3]) }, (g, { a }) => g.op("Concat", [a, a], { axis: 0 }));
gc(
  "Concat",
  "symbolic sizes (runtime slices)",
  { a: i([2, 3], normal, ["n", 3]), b: i([3, 3], normal, ["m", 3]) },
  (g, { a, b }) => g.op("Concat", [a, b], { axis: 0 }),
  { backward: ["Slice"] },
);

gc(
  "Split",
  "sizes [2, 4] on axis 1, second output unused",
  { x: i([3, 6]) },
  (g, { x }) => g.opN("Split", [x, g.ints([2, 4])], { axis: 1 }, 2)[0],
);
gc(
  "Split",
  "sizes [1, 3] on axis 0, first output unused",
  { x: i([4, 2]) },
  (g, { x }) => g.opN("Split", [x, g.ints([1, 3])], { axis: 0 }, 2)[1],
);
gc("Split", "equal chunks, recombined", { x: i([2, 8]) }, (g, { x }) => {
  const [p, q] = ops.chunk(g, x, 2, -1);
  return g.op("Mul", [p, g.op("Tanh", [q])]);
});

gc(
  "Slice",
  "starts/ends/axes",
  { x: i([4, 5, 3]) },
  (g, { x }) => g.op("Slice", [x, g.ints([1, 2]), g.ints([3, 5]), g.ints([0, 1])]),
);
gc(
  "Slice",
  "negative start, huge end, no axes",
  { x: i([4, 5]) },
  (g, { x }) => g.op("Slice", [x, g.ints([-3, 0]), g.ints([2 ** 31 - 1, 2])]),
);
gc(
  "Slice",
  "negative axis and end",
  { x: i([3, 6]) },
  (g, { x }) => g.op("Slice", [x, g.ints([1]), g.ints([-1]), g.ints([-1])]),
);
gc(
  "Slice",
  "explicit unit steps",
  { x: i([3, 6]) },
  (g, { x }) => g.op("Slice", [x, g.ints([0, 2]), g.ints([2, 5]), g.ints([0, 1]), g.ints([1, 1])]),
);

gc("Gather", "embedding lookup with repeated ids (scatter-add)", { table: i([5, 3]) }, (g, { table }) => {
  const ids = g.constant([0, 2, 2, 4, 0, 2], [2, 3], "int64");
  return g.op("Gather", [table, ids], { axis: 0 });
});
gc(
  "Gather",
  "scalar index",
  { table: i([4, 3]) },
  (g, { table }) => g.op("Gather", [table, g.constant([2], [], "int64")], { axis: 0 }),
);
gc(
  "Gather",
  "negative ids",
  { table: i([4, 2]) },
  (g, { table }) => g.op("Gather", [table, g.constant([-1, 1, -1], [3], "int64")], { axis: 0 }),
);

// ---------------------------------------------------------------------------------------------------------
// Softmax and normalizations.

gc("Softmax", "axis -1", { x: i([2, 3, 4], wide) }, (g, { x }) => g.op("Softmax", [x], { axis: -1 }));
gc("Softmax", "axis 1", { x: i([2, 3, 4], wide) }, (g, { x }) => g.op("Softmax", [x], { axis: 1 }));

gc(
  "LayerNormalization",
  "axis -1, gamma and beta",
  { x: i([2, 3, 5]), gamma: i([5]), beta: i([5]) },
  (g, { x, gamma, beta }) =>
    g.op("LayerNormalization", [x, gamma, beta], { axis: -1, epsilon: { float: 1e-5 } }),
);
gc(
  "LayerNormalization",
  "axis 1 over [3, 4]",
  { x: i([2, 3, 4]), gamma: i([3, 4]), beta: i([3, 4]) },
  (g, { x, gamma, beta }) =>
    g.op("LayerNormalization", [x, gamma, beta], { axis: 1, epsilon: { float: 1e-5 } }),
);
gc(
  "LayerNormalization",
  "large epsilon given as a plain number, no beta",
  { x: i([3, 4], (rng, n) => rng.normal(n, 0.3)), gamma: i([4]) },
  (g, { x, gamma }) => g.op("LayerNormalization", [x, gamma], { epsilon: 0.25 }),
);
gc(
  "InstanceNormalization",
  "NCHW: input, scale, bias",
  { x: i([2, 3, 4, 5]), scale: i([3]), bias: i([3]) },
  (g, { x, scale, bias }) => g.op("InstanceNormalization", [x, scale, bias], { epsilon: { float: 1e-5 } }),
);
gc(
  "InstanceNormalization",
  "rank 3, large epsilon",
  { x: i([2, 3, 6], (rng, n) => rng.normal(n, 0.3)), scale: i([3]), bias: i([3]) },
  (g, { x, scale, bias }) => g.op("InstanceNormalization", [x, scale, bias], { epsilon: { float: 0.1 } }),
);

// ---------------------------------------------------------------------------------------------------------
// Conv: kernel 1 and 3, stride 1 and 2 on even and odd sizes, padding 0 / 1 / asymmetric, grouped.

interface ConvCase {
  x: number[];
  w: number[];
  stride: number;
  pads: [number, number, number, number];
  groups?: number;
  bias?: boolean;
}
const convCases: ConvCase[] = [
  { x: [2, 3, 5, 5], w: [4, 3, 1, 1], stride: 1, pads: [0, 0, 0, 0] },
  { x: [1, 2, 6, 5], w: [3, 2, 3, 3], stride: 1, pads: [1, 1, 1, 1] },
  { x: [1, 2, 6, 6], w: [3, 2, 3, 3], stride: 1, pads: [0, 0, 0, 0] },
  { x: [1, 2, 8, 8], w: [3, 2, 3, 3], stride: 2, pads: [1, 1, 1, 1] },
  { x: [1, 2, 7, 7], w: [3, 2, 3, 3], stride: 2, pads: [1, 1, 1, 1] },
  { x: [2, 2, 8, 6], w: [2, 2, 3, 3], stride: 2, pads: [0, 0, 1, 1] },
  { x: [1, 2, 7, 8], w: [2, 2, 3, 3], stride: 2, pads: [0, 0, 1, 1] },
  { x: [1, 2, 6, 7], w: [3, 2, 3, 3], stride: 2, pads: [0, 0, 0, 0] },
  { x: [1, 3, 6, 6], w: [2, 3, 1, 1], stride: 2, pads: [0, 0, 0, 0], bias: false },
];
for (const c of convCases) {
  const inputs: Record<string, In> = { x: i(c.x), w: i(c.w, (rng, n) => rng.normal(n, 0.5)) };
  if (c.bias !== false) inputs.b = i([c.w[0]]);
  gc(
    "Conv",
    `x [${c.x}] w [${c.w}] stride ${c.stride} pads [${c.pads}]${c.bias === false ? " no bias" : ""}`,
    inputs,
    (g, { x, w, b }) => ops.conv2d(g, x, w, b ?? null, { stride: c.stride, padding: c.pads }),
  );
}
for (const stride of [1, 2]) {
  gc(
    "Conv",
    `groups 2, stride ${stride} (input gradient only)`,
    { x: i([1, 4, 7, 6]), w: frozen([6, 2, 3, 3]), b: frozen([6]) },
    (g, { x, w, b }) => ops.conv2d(g, x, w, b, { stride, padding: 1, groups: 2 }),
  );
}

gc(
  "Conv",
  "symbolic spatial dims, stride 1, pads 1 (inference-style graph)",
  {
    x: i([1, 2, 5, 6], normal, [1, 2, "h", "w"]),
    w: i([3, 2, 3, 3], (rng, n) => rng.normal(n, 0.5)),
    b: i([3]),
  },
  (g, { x, w, b }) => ops.conv2d(g, x, w, b, { padding: 1 }),
);

gc("Resize", "nearest 2x", { x: i([2, 3, 3, 4]) }, (g, { x }) => ops.upsampleNearest2x(g, x));

// ---------------------------------------------------------------------------------------------------------
// Reductions.

for (const keepdims of [0, 1]) {
  for (const axes of [[1], [0, 2], [-1]]) {
    gc(
      "ReduceSum",
      `axes [${axes}] keepdims ${keepdims}`,
      { x: i([2, 3, 4]) },
      (g, { x }) => g.op("ReduceSum", [x, g.ints(axes)], { keepdims }),
    );
    gc(
      "ReduceMean",
      `axes [${axes}] keepdims ${keepdims}`,
      { x: i([2, 3, 4]) },
      (g, { x }) => g.op("ReduceMean", [x], { axes, keepdims }),
    );
  }
  gc(
    "ReduceSum",
    `all axes keepdims ${keepdims}`,
    { x: i([2, 3]) },
    (g, { x }) => g.op("ReduceSum", [x], { keepdims }),
  );
  gc(
    "ReduceMean",
    `all axes keepdims ${keepdims}`,
    { x: i([2, 3]) },
    (g, { x }) => g.op("ReduceMean", [x], { keepdims }),
  );
}
for (const op of ["ReduceSum", "ReduceMean"]) {
  // Tile has no shape inference, so the product's rank is unknown: reducing every axis must not need it.
  gc(
    op,
    "all axes of a value of unknown rank",
    { x: i([2, 3]), y: frozen([1, 3]) },
    (g, { x, y }) => g.op(op, [g.op("Mul", [x, g.op("Tile", [y, g.ints([2, 1])])])], { keepdims: 0 }),
    { backward: ["NonZero"] },
  );
}
gc(
  "ReduceMean",
  "symbolic batch (runtime count)",
  { x: i([2, 3, 4], normal, ["b", 3, "l"]) },
  (g, { x }) => g.op("ReduceMean", [x], { axes: [0, 2], keepdims: 1 }),
);

// ---------------------------------------------------------------------------------------------------------
// The composite layers of ops.ts, end to end.

gc(
  "ops.groupNorm",
  "2 groups of 2 channels",
  { x: i([2, 4, 3, 3]), gamma: i([4]), beta: i([4]) },
  (g, { x, gamma, beta }) => ops.groupNorm(g, x, gamma, beta, 2, 4, 1e-5),
);
gc(
  "ops.attention",
  "2 heads, padding mask (mask gradient too)",
  {
    q: i([2, 3, 4]),
    k: i([2, 5, 4]),
    v: i([2, 5, 4]),
    mask: i(
      [2, 1, 1, 5],
      (rng, n) => Float32Array.from({ length: n }, (_, k) => (k % 5 === 4 ? -30 : 0.5 * rng.gauss())),
    ),
  },
  (g, { q, k, v, mask }) => ops.attention(g, q, k, v, 2, 2, mask),
);
gc(
  "ops.attention",
  "causal mask [Lq, Lk] (frozen)",
  { q: i([1, 4, 6]), k: i([1, 4, 6]), v: i([1, 4, 6]) },
  (g, { q, k, v }) => {
    const m = Array.from({ length: 16 }, (_, t) => (t % 4 > Math.floor(t / 4) ? -1e4 : 0));
    return ops.attention(g, q, k, v, 3, 2, g.constant(m, [4, 4]));
  },
);
gc("ops.gelu", "[2, 5]", { x: i([2, 5], wide) }, (g, { x }) => ops.gelu(g, x));
gc("ops.silu", "[2, 5]", { x: i([2, 5], wide) }, (g, { x }) => ops.silu(g, x));
gc("ops.quickGelu", "[2, 5]", { x: i([2, 5], wide) }, (g, { x }) => ops.quickGelu(g, x));
gc(
  "ops.linear",
  "x [2, 3, 4], W [5, 4], b [5]",
  { x: i([2, 3, 4]), w: i([5, 4]), b: i([5]) },
  (g, { x, w, b }) => ops.linear(g, x, w, b),
);
gc(
  "ops.upsampleNearest2x",
  "then a 3x3 conv",
  { x: i([1, 2, 3, 3]), w: i([2, 2, 3, 3]) },
  (g, { x, w }) => ops.conv2d(g, ops.upsampleNearest2x(g, x), w, null, { padding: 1 }),
);
gc(
  "ops.toSequence/fromSequence",
  "round trip through a linear",
  { x: i([1, 3, 2, 3]), w: i([3, 3]) },
  (g, { x, w }) => ops.fromSequence(g, ops.linear(g, ops.toSequence(g, x, 3), w), x),
);

// ---------------------------------------------------------------------------------------------------------

Deno.test("every gradient rule has a finite-difference case", () => {
  const covered = new Set(CASES.map((c) => c.op));
  const missing = Object.keys(GRADIENT_RULES).filter((op) => !covered.has(op));
  assert(missing.length === 0, `no gradcheck case for: ${missing.join(", ")}`);
});

CASES.forEach((c, k) => {
  Deno.test(`grad ${c.op}: ${c.name}`, async () => {
    const rng = new Rng(1000 + k);
    const feeds: Record<string, Tensor> = {};
    for (const [name, spec] of Object.entries(c.inputs)) {
      const n = spec.dims.reduce((a, b) => a * b, 1);
      feeds[name] = Tensor.f32(spec.dims, (spec.gen ?? normal)(rng, n));
    }
    const r = await gradcheck({
      name: `${c.op}: ${c.name}`,
      seed: k,
      feeds,
      build: (g) => {
        const xs: Record<string, Value> = {};
        for (const [name, spec] of Object.entries(c.inputs)) {
          xs[name] = g.input(name, "float32", spec.declared ?? spec.dims);
        }
        const output = c.build(g, xs);
        const inputs = Object.entries(c.inputs).filter(([, s]) => !s.frozen).map(([name]) => xs[name]);
        return { inputs, output };
      },
      ...c.options,
    });
    if (!c.op.startsWith("ops.")) assert(r.forwardOps.has(c.op), `the case has no ${c.op} node`);
    for (const op of c.backward ?? []) {
      assert(
        r.backwardOps.has(op),
        `expected a ${op} in the backward pass (${[...r.backwardOps].join(", ")})`,
      );
    }
    if (Deno.env.get("GRADCHECK_REPORT") === "verbose") console.log(r.report);
    // Past its own tolerances, a bound that catches a precision regression in any rule (checked here, in the
    // case itself, so that a filtered run checks it too).
    assert(
      r.worst <= WORST_BOUND,
      `${c.op}: ${c.name}: worst relative error ${r.worst} above ${WORST_BOUND}`,
    );
    worst.set(c.op, Math.max(worst.get(c.op) ?? 0, r.worst));
  });
});

// ---------------------------------------------------------------------------------------------------------
// The checker itself: a subtly wrong rule must fail.

async function withRule(op: string, rule: GradRule, fn: () => Promise<void>) {
  const saved = GRADIENT_RULES[op];
  GRADIENT_RULES[op] = rule;
  try {
    await fn();
  } finally {
    GRADIENT_RULES[op] = saved;
  }
}

Deno.test("gradcheck catches a rule that is 2% off", async () => {
  const tanh = GRADIENT_RULES.Tanh;
  await withRule("Tanh", (c) => [c.g.op("Mul", [tanh(c)[0]!, c.g.scalar(1.02)])], async () => {
    const r = await gradcheck({
      name: "tanh 2% off",
      throwOnFailure: false,
      build: (g) => {
        const x = g.input("x", "float32", [4, 5]);
        return { inputs: [x], output: g.op("Tanh", [x]) };
      },
      feeds: { x: Tensor.f32([4, 5], new Rng(5).normal(20)) },
    });
    assert(!r.ok, `a 2% error passed:\n${r.report}`);
  });
});

Deno.test("gradcheck catches one wrong coordinate (Gather without scatter-add)", async () => {
  await withRule("Gather", ({ g, inputs: [data, idx], gradOutputs: [gy] }) => {
    const zeros = g.op("Mul", [data!, g.scalar(0)]);
    return [g.op("ScatterND", [zeros, g.op("Unsqueeze", [idx!, g.ints([-1])]), gy!]), null];
  }, async () => {
    const r = await gradcheck({
      name: "gather without accumulation",
      throwOnFailure: false,
      build: (g) => {
        const t = g.input("t", "float32", [6, 4]);
        return { inputs: [t], output: g.op("Gather", [t, g.constant([0, 1, 2, 3, 4, 2], [6], "int64")]) };
      },
      feeds: { t: Tensor.f32([6, 4], new Rng(6).normal(24)) },
    });
    assert(!r.ok, `a missed duplicate passed:\n${r.report}`);
    assert(/FAIL t \[2, \d\]/.test(r.report), `the report does not name row 2:\n${r.report}`);
  });
});

// ---------------------------------------------------------------------------------------------------------
// The autodiff's contract.

Deno.test("appendBackward: an op without a rule on the differentiated path is a NoGradientError", () => {
  const g = new GraphBuilder("norule");
  const x = g.input("x", "float32", [2, 3]);
  const m = g.op("ReduceMax", [x], { axes: [1], keepdims: 0 });
  const loss = g.op("ReduceSum", [m], { keepdims: 0 });
  assertThrows(() => appendBackward(g, loss, [x]), NoGradientError, "no gradient rule for op ReduceMax");
});

Deno.test("appendBackward: an op without a rule off the differentiated path is fine", () => {
  const g = new GraphBuilder("norule_off_path");
  const x = g.input("x", "float32", [2, 3]);
  const y = g.input("y", "float32", [2, 3]);
  const m = g.op("ReduceMax", [y], { axes: [1], keepdims: 1 });
  const loss = g.op("ReduceSum", [g.op("Mul", [x, m])], { keepdims: 0 });
  const [dx] = appendBackward(g, loss, [x]);
  assert(dx.dtype === "float32");
});

Deno.test("appendBackward: a loss that does not depend on the inputs is a NoGradientError", () => {
  const g = new GraphBuilder("nodep");
  const x = g.input("x", "float32", [2]);
  const y = g.input("y", "float32", [2]);
  g.op("Exp", [x]);
  const loss = g.op("ReduceSum", [y], { keepdims: 0 });
  assertThrows(() => appendBackward(g, loss, [x]), NoGradientError, "does not depend");
});

Deno.test("appendBackward: an input the loss does not reach gets a zero gradient", async () => {
  const r = await gradcheck({
    name: "unreached input",
    build: (g) => {
      const x = g.input("x", "float32", [2, 3]);
      const z = g.input("z", "float32", [4]);
      g.op("Exp", [z]);
      return { inputs: [x, z], output: g.op("Tanh", [x]) };
    },
    feeds: { x: Tensor.f32([2, 3], new Rng(1).normal(6)), z: Tensor.f32([4], new Rng(2).normal(4)) },
  });
  assert(r.gradients.z.f.every((v) => v === 0), "the gradient of z is not zero");
});

/**
 * loss = sum((sin(a) C1) * (f(b) C2)) with f `depth` alternating Tanh/Cos ops, plus a dead branch of `depth`
 * Exp ops on a that never reaches the loss.
 */
function twoBranches(depth: number, wrt: "a" | "both") {
  const g = new GraphBuilder("branches");
  const a = g.input("a", "float32", [3, 4]);
  const b = g.input("b", "float32", [3, 4]);
  const fa = g.op("MatMul", [g.op("Sin", [a]), g.constant(new Float32Array(20).fill(0.5), [4, 5])]);
  let dead = a;
  for (let k = 0; k < depth; k++) dead = g.op("Exp", [dead]);
  let fb = b;
  for (let k = 0; k < depth; k++) fb = g.op(k % 2 ? "Cos" : "Tanh", [fb]);
  const fb5 = g.op("MatMul", [fb, g.constant(new Float32Array(20).fill(0.25), [4, 5])]);
  const loss = g.op("ReduceSum", [g.op("Mul", [fa, fb5])], { keepdims: 0 });
  const before = g.nodeCount;
  appendBackward(g, loss, wrt === "a" ? [a] : [a, b]);
  const added = g.graphNodes.slice(before);
  return { added: added.length, names: added.map((n) => n.name) };
}

Deno.test("appendBackward is lean: nothing for the other branch, nothing for a dead branch", () => {
  const short = twoBranches(2, "a"), long = twoBranches(12, "a");
  assert(
    short.added === long.added,
    `backward nodes grew with the other branch: ${short.added} vs ${long.added}`,
  );
  for (const name of long.names) {
    assert(!/backward\.(Tanh|Cos|Exp)\//.test(name), `a backward node for a branch that needs none: ${name}`);
  }
  // Sanity: differentiating both branches does add work proportional to the second branch.
  assert(twoBranches(12, "both").added > twoBranches(2, "both").added + 10);
});

// Only a report (GRADCHECK_REPORT=1): each case checks its own bound. Run with the cases filtered out, it fails
// rather than print a partial table.
Deno.test({
  name: "report the worst relative error per rule",
  ignore: !Deno.env.get("GRADCHECK_REPORT"),
  fn() {
    const missing = [...new Set(CASES.map((c) => c.op))].filter((op) => !worst.has(op));
    assert(missing.length === 0, `the report needs every case run; not run: ${missing.join(", ")}`);
    for (const [op, e] of [...worst].sort()) console.log(`${op.padEnd(28)} ${e.toExponential(2)}`);
  },
});
