import {
  type BaseLayer,
  closedFormMerge,
  type ClosedFormMergeOptions,
  factorRegularization,
  type MergeConcept,
  MergeError,
  naiveAverage,
  softConstrainedMerge,
} from "./custom_diffusion_merge.ts";
import {
  cholesky,
  frobeniusNorm,
  fromFloat32,
  gram,
  matmul,
  matmulTransB,
  type Matrix,
  matrix,
  solveCholesky,
  sub,
  transpose,
} from "../linalg/dense.ts";
import { Rng } from "../random.ts";
import { assert, assertEquals, assertThrows } from "../testing.ts";

const D = 24; // text feature dim
const OUTS: Record<string, number> = { "a.to_k": 10, "a.to_v": 14, "b.to_k": 7 };

interface Problem {
  base: Map<string, BaseLayer>;
  concepts: MergeConcept[];
  reg: Float32Array;
  regRows: number;
}

/** Base layers, two concepts (3 and 2 target rows; the second lacks "b.to_k") and 60 regularization rows. */
function problem(seed = 1): Problem {
  const rng = new Rng(seed);
  const base = new Map<string, BaseLayer>();
  for (const [name, out] of Object.entries(OUTS)) {
    base.set(name, { data: rng.normal(out * D, 0.5), out, inFeatures: D });
  }
  const concept = (name: string, rows: number, layers: string[]): MergeConcept => ({
    name,
    targetRows: rows,
    targetFeatures: rng.normal(rows * D),
    weights: new Map(layers.map((l) => {
      const b = base.get(l)!.data, noise = rng.normal(b.length, 0.1);
      return [l, b.map((x, i) => x + noise[i])];
    })),
  });
  const concepts = [
    concept("cat", 3, ["a.to_k", "a.to_v", "b.to_k"]),
    concept("chair", 2, ["a.to_k", "a.to_v"]),
  ];
  return { base, concepts, reg: rng.normal(60 * D), regRows: 60 };
}

function options(p: Problem, extra: Partial<ClosedFormMergeOptions> = {}): ClosedFormMergeOptions {
  return {
    base: p.base,
    concepts: p.concepts,
    regularizationFeatures: p.reg,
    regularizationRows: p.regRows,
    featureDim: D,
    ...extra,
  };
}

const layer = (name: string, w: Float32Array) => fromFloat32(OUTS[name], D, w);
const targets = (c: MergeConcept) => fromFloat32(c.targetRows, D, c.targetFeatures);

/** max |W K_tᵀ - W_n K_tᵀ| / max |W_n K_tᵀ| for one concept and layer. */
function constraintError(w: Matrix, wn: Matrix, kt: Matrix): number {
  const want = matmulTransB(kt, wn), got = matmulTransB(kt, w);
  let num = 0, den = 0;
  for (let i = 0; i < want.data.length; i++) {
    num = Math.max(num, Math.abs(got.data[i] - want.data[i]));
    den = Math.max(den, Math.abs(want.data[i]));
  }
  return num / den;
}

/** ||(W - W0) Kᵀ||_F², the merge objective. */
function objective(w: Matrix, w0: Matrix, k: Matrix): number {
  return frobeniusNorm(matmulTransB(sub(w, w0), k)) ** 2;
}

Deno.test("closedFormMerge: the merged W maps every concept's targets exactly as its own W_n (float64)", () => {
  const p = problem();
  const { weights, weights64, stats } = closedFormMerge(options(p, { float64: true }));
  assertEquals([...weights.keys()], ["a.to_k", "a.to_v", "b.to_k"]);
  for (const name of Object.keys(OUTS)) {
    const w = weights64!.get(name)!;
    assertEquals([w.rows, w.cols], [OUTS[name], D]);
    for (const c of p.concepts) {
      const wn = layer(name, c.weights.get(name) ?? p.base.get(name)!.data);
      const err = constraintError(w, wn, targets(c));
      assert(err < 1e-12, `${name} / ${c.name}: constraint error ${err}`);
    }
    // The float32 output is the float64 result rounded.
    assertEquals(weights.get(name), Float32Array.from(w.data));
  }
  assertEquals(
    [stats.layers, stats.targetRows, stats.regularizationRows],
    [3, 5, 60],
  );
  assert(stats.conditionC >= 1 && stats.conditionTargets >= 1 && Number.isFinite(stats.conditionC));
});

Deno.test("closedFormMerge: optimal among feasible weights; the naive average violates the constraints", () => {
  const p = problem(2);
  const { weights64 } = closedFormMerge(options(p, { float64: true }));
  const k = fromFloat32(p.regRows, D, p.reg);
  const kt = matrix(5, D);
  kt.data.set(p.concepts[0].targetFeatures.map(Number), 0);
  kt.data.set(p.concepts[1].targetFeatures.map(Number), 3 * D);
  // Projector onto the complement of the targets' row space: I - K_tᵀ (K_t K_tᵀ)⁻¹ K_t.
  const y = solveCholesky(cholesky(matmulTransB(kt, kt)), kt); // (K_t K_tᵀ)⁻¹ K_t
  const rng = new Rng(7);
  for (const name of ["a.to_k", "a.to_v"]) {
    const w = weights64!.get(name)!, w0 = layer(name, p.base.get(name)!.data);
    const f = objective(w, w0, k);
    for (const eps of [1e-3, 0.1, 1]) {
      const r = matrix(OUTS[name], D, Float64Array.from(rng.normal(OUTS[name] * D)));
      const pert = sub(r, matmul(matmulTransB(r, kt), y)); // P with P K_tᵀ = 0
      assert(frobeniusNorm(matmulTransB(pert, kt)) < 1e-12 * frobeniusNorm(pert), "P keeps the constraints");
      const wp = { ...w, data: w.data.map((x, i) => x + eps * pert.data[i]) };
      const fp = objective(wp, w0, k);
      assert(fp > f, `${name}, eps ${eps}: perturbed objective ${fp} must exceed ${f}`);
      // At the optimum the cross term vanishes: f(W + εP) = f(W) + ε²||P Kᵀ||².
      const quad = eps ** 2 * frobeniusNorm(matmulTransB(pert, k)) ** 2;
      assert(
        Math.abs(fp - f - quad) < 1e-8 * (f + quad),
        `${name}, eps ${eps}: first-order term is not zero`,
      );
    }
  }
  // The element-wise mean does not keep either concept's targets.
  const avg = naiveAverage(p.concepts, p.base);
  for (const c of p.concepts) {
    const name = "a.to_v";
    const err = constraintError(
      layer(name, avg.get(name)!),
      layer(name, c.weights.get(name)!),
      targets(c),
    );
    assert(err > 1e-2, `naive average keeps ${c.name}'s targets (error ${err}), it should not`);
  }
});

Deno.test("closedFormMerge: one concept keeps its targets, moves less than W_n on regularization features", () => {
  const p = problem(3);
  const one = { ...p, concepts: [p.concepts[0]] };
  const { weights64 } = closedFormMerge(options(one, { float64: true }));
  const k = fromFloat32(p.regRows, D, p.reg);
  for (const name of Object.keys(OUTS)) {
    const w = weights64!.get(name)!, w0 = layer(name, p.base.get(name)!.data);
    const wn = layer(name, p.concepts[0].weights.get(name)!);
    assert(constraintError(w, wn, targets(p.concepts[0])) < 1e-12, `${name}: targets kept`);
    // W_n is feasible, so the optimum is at least as close to W0 on K; with 3 targets in 24 dims, much closer.
    const ratio = Math.sqrt(objective(w, w0, k) / objective(wn, w0, k));
    assert(ratio < 0.6, `${name}: ||(W - W0)Kᵀ|| / ||(W_n - W0)Kᵀ|| = ${ratio}`);
  }
  // A concept whose change is already of the optimal form Z·K_t C⁻¹ is returned unchanged.
  const kt = targets(p.concepts[0]);
  const dm = transpose(solveCholesky(cholesky(gram(k)), transpose(kt))); // K_t C⁻¹
  const rng = new Rng(11);
  const name = "a.to_v", w0 = layer(name, p.base.get(name)!.data);
  const z = matrix(OUTS[name], 3, Float64Array.from(rng.normal(OUTS[name] * 3)));
  const wn = Float32Array.from(matmul(z, dm).data, (x, i) => w0.data[i] + x);
  const c = { ...p.concepts[0], weights: new Map([[name, wn]]) };
  const merged = closedFormMerge(options({ ...p, concepts: [c] }, { float64: true })).weights64!.get(name)!;
  const wn64 = fromFloat32(OUTS[name], D, wn);
  // Up to what rounding W_n to float32 added (which is not of the optimal form and may be projected away).
  const rounding = frobeniusNorm(
    sub(wn64, { ...w0, data: w0.data.map((x, i) => x + matmul(z, dm).data[i]) }),
  );
  const diff = frobeniusNorm(sub(merged, wn64));
  assert(
    rounding > 0 && diff <= 10 * rounding,
    `already-optimal concept changed by ${diff} (rounding ${rounding})`,
  );
  assert(diff < 1e-6 * frobeniusNorm(sub(wn64, w0)), `changed by ${diff}`);
});

Deno.test("closedFormMerge: a precomputed regularization factor gives the same weights", () => {
  const p = problem(4);
  const direct = closedFormMerge(options(p));
  const reg = factorRegularization(p.reg, p.regRows, D);
  const reused = closedFormMerge({ base: p.base, concepts: p.concepts, featureDim: D, regularization: reg });
  for (const [name, w] of direct.weights) assertEquals(reused.weights.get(name), w, name);
  assertEquals(reused.stats.gramMs, 0);
  assertEquals(reused.stats.conditionC, direct.stats.conditionC);
});

Deno.test("closedFormMerge: rank-deficient regularization features are refused with the rank and a hint", () => {
  const p = problem(5);
  const few = assertThrows(
    () =>
      closedFormMerge(options(p, { regularizationRows: 10, regularizationFeatures: p.reg.slice(0, 10 * D) })),
    MergeError,
    "only 10 rows",
  );
  assertEquals(few.kind, "regularization_rank");
  assert(few.hint.includes("more varied"), few.hint);
  // 60 rows, but only 5 distinct ones.
  const dup = new Float32Array(60 * D);
  for (let r = 0; r < 60; r++) dup.set(p.reg.subarray((r % 5) * D, (r % 5 + 1) * D), r * D);
  const e = assertThrows(
    () => closedFormMerge(options(p, { regularizationFeatures: dup })),
    MergeError,
    "rank 5 of 24",
  );
  assertEquals(e.kind, "regularization_rank");
  assert(e.cause?.kind === "singular" || e.cause?.kind === "ill_conditioned", `cause ${e.cause?.kind}`);
});

Deno.test("closedFormMerge: duplicated target features across concepts are refused naming the row", () => {
  const p = problem(6);
  const [cat, chair] = p.concepts;
  const copy = chair.targetFeatures.slice();
  copy.set(cat.targetFeatures.subarray(D, 2 * D), D); // chair's row 1 = cat's row 1
  const e = assertThrows(
    () => closedFormMerge(options({ ...p, concepts: [cat, { ...chair, targetFeatures: copy }] })),
    MergeError,
    'target row 1 of concept "chair"',
  );
  assertEquals(e.kind, "targets_dependent");
  assert(e.hint.includes("distinct target prompts"), e.hint);
  // More target rows than feature dimensions cannot be independent.
  const many = { ...cat, targetRows: 25, targetFeatures: new Rng(1).normal(25 * D) };
  assertEquals(
    assertThrows(() => closedFormMerge(options({ ...p, concepts: [many] })), MergeError, "25 target").kind,
    "targets_dependent",
  );
});

Deno.test("closedFormMerge: shape errors name the concept and the layer", () => {
  const p = problem(7);
  const [cat, chair] = p.concepts;
  const badWeight = { ...chair, weights: new Map([["a.to_k", new Float32Array(5)]]) };
  const e1 = assertThrows(
    () => closedFormMerge(options({ ...p, concepts: [cat, badWeight] })),
    MergeError,
    '"a.to_k"',
  );
  assertEquals([e1.kind, e1.layer], ["shape", "a.to_k"]);
  assert(e1.message.includes('"chair"') && e1.message.includes("got 5"), e1.message);

  const unknown = { ...chair, weights: new Map([["c.to_v", new Float32Array(10 * D)]]) };
  assertEquals(
    assertThrows(() => closedFormMerge(options({ ...p, concepts: [unknown] })), MergeError, "c.to_v").layer,
    "c.to_v",
  );

  const base = new Map(p.base);
  base.set("a.to_v", { data: new Float32Array(14 * 12), out: 14, inFeatures: 12 });
  const e3 = assertThrows(
    () => closedFormMerge(options({ ...p, base })),
    MergeError,
    "takes 12 input features",
  );
  assertEquals(e3.layer, "a.to_v");

  const badTargets = { ...cat, targetFeatures: new Float32Array(3 * D - 1) };
  assertEquals(
    assertThrows(() => closedFormMerge(options({ ...p, concepts: [badTargets] })), MergeError, '"cat"').kind,
    "shape",
  );
  assertEquals(
    assertThrows(() => closedFormMerge(options(p, { regularizationRows: 61 })), MergeError, "61 rows").kind,
    "shape",
  );
  assertEquals(
    assertThrows(() => closedFormMerge(options({ ...p, concepts: [] })), MergeError).kind,
    "no_concepts",
  );
  const nan = { ...chair, weights: new Map([["a.to_k", new Float32Array(10 * D).fill(NaN)]]) };
  assertEquals(
    assertThrows(() => closedFormMerge(options({ ...p, concepts: [nan] })), MergeError).kind,
    "non_finite",
  );
});

Deno.test("naiveAverage: element-wise mean per layer, base weights standing in for missing layers", () => {
  const base = new Map<string, BaseLayer>([
    ["x", { data: new Float32Array([0, 0]), out: 1, inFeatures: 2 }],
    ["y", { data: new Float32Array([9, 9]), out: 1, inFeatures: 2 }],
    ["z", { data: new Float32Array([5, 5]), out: 1, inFeatures: 2 }],
  ]);
  const c = (w: [string, number[]][]): MergeConcept => ({
    name: "c",
    targetRows: 1,
    targetFeatures: new Float32Array(2),
    weights: new Map(w.map(([k, v]) => [k, new Float32Array(v)])),
  });
  const avg = naiveAverage([c([["x", [1, 2]], ["y", [3, 3]]]), c([["x", [3, 6]]])], base);
  assertEquals([...avg.keys()], ["x", "y"]);
  assertEquals(avg.get("x"), new Float32Array([2, 4]));
  assertEquals(avg.get("y"), new Float32Array([6, 6]));
});

Deno.test("softConstrainedMerge: tends to the exact merge as lambda grows; solves the penalized normal equations", () => {
  const p = problem(5);
  const regularization = factorRegularization(p.reg, p.regRows, D);
  const exact = closedFormMerge(options(p)).weights;
  const gap = (lambda: number) => {
    const soft =
      softConstrainedMerge({ base: p.base, concepts: p.concepts, regularization, featureDim: D, lambda })
        .weights;
    let worst = 0, scale = 0;
    for (const [name, w] of exact) {
      const s = soft.get(name)!;
      w.forEach((v, i) => {
        worst = Math.max(worst, Math.abs(v - s[i]));
        scale = Math.max(scale, Math.abs(v - p.base.get(name)!.data[i]));
      });
    }
    return worst / scale;
  };
  const g1 = gap(1), g100 = gap(100), g1e6 = gap(1e6);
  assert(g1 > g100 && g100 > g1e6, `gaps ${g1}, ${g100}, ${g1e6}`);
  assert(g1e6 < 1e-3, `lambda 1e6: ${g1e6} from the exact merge`);
  // Normal equations: W (C + μT) = W0 C + μ Σ W_n T_n for every layer (μ = lambda · rows(K) / rows(K_t)).
  const lambda = 3;
  const soft = softConstrainedMerge({
    base: p.base,
    concepts: p.concepts,
    regularization,
    featureDim: D,
    lambda,
  });
  const m = p.concepts.reduce((s, c) => s + c.targetRows, 0);
  const mu = lambda * p.regRows / m;
  const c = gram(fromFloat32(p.regRows, D, p.reg));
  for (const [name, w] of soft.weights) {
    const lhs = matmul(layer(name, w), c), rhs = matmul(layer(name, p.base.get(name)!.data), c);
    for (const concept of p.concepts) {
      const t = gram(targets(concept));
      const wn = layer(name, concept.weights.get(name) ?? p.base.get(name)!.data);
      const wt = matmul(layer(name, w), t), wnt = matmul(wn, t);
      lhs.data.forEach((_, i) => {
        lhs.data[i] += mu * wt.data[i];
        rhs.data[i] += mu * wnt.data[i];
      });
    }
    let err = 0, norm = 0;
    lhs.data.forEach((v, i) => {
      err = Math.max(err, Math.abs(v - rhs.data[i]));
      norm = Math.max(norm, Math.abs(rhs.data[i]));
    });
    assert(err < 1e-5 * norm, `${name}: normal equations off by ${err} (scale ${norm})`);
  }
});
