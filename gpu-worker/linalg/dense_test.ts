import {
  add,
  cholesky,
  choleskyCondition,
  fromFloat32,
  fromFloat32Transposed,
  fromRows,
  gram,
  gramRows,
  identity,
  LinalgError,
  lowRankApprox,
  matmul,
  matmulTransA,
  matmulTransB,
  type Matrix,
  matrix,
  scale,
  solveCholesky,
  sub,
  svd,
  symmetricEigen,
  toFloat32,
  transpose,
} from "./dense.ts";
import { Rng } from "../random.ts";
import { assert, assertEquals, assertThrows } from "../testing.ts";

function rand(rng: Rng, rows: number, cols: number): Matrix {
  const d = new Float64Array(rows * cols);
  for (let i = 0; i < d.length; i++) d[i] = rng.gauss();
  return matrix(rows, cols, d);
}

/** Textbook triple loop, the definition the fast kernels are checked against. */
function naiveMul(a: Matrix, b: Matrix): Matrix {
  const out = matrix(a.rows, b.cols);
  for (let i = 0; i < a.rows; i++) {
    for (let j = 0; j < b.cols; j++) {
      let s = 0;
      for (let t = 0; t < a.cols; t++) s += a.data[i * a.cols + t] * b.data[t * b.cols + j];
      out.data[i * b.cols + j] = s;
    }
  }
  return out;
}

function maxDiff(a: Matrix, b: Matrix): number {
  assertEquals([a.rows, a.cols], [b.rows, b.cols], "shapes");
  let m = 0;
  for (let i = 0; i < a.data.length; i++) m = Math.max(m, Math.abs(a.data[i] - b.data[i]));
  return m;
}

/** max |MᵀM - I|: how far the columns of m are from orthonormal. */
function orthoError(m: Matrix): number {
  return maxDiff(matmulTransA(m, m), identity(m.cols));
}

function reconstruct(u: Matrix, s: Float64Array, v: Matrix): Matrix {
  const us = matrix(u.rows, u.cols, u.data.slice());
  for (let r = 0; r < u.rows; r++) for (let c = 0; c < u.cols; c++) us.data[r * u.cols + c] *= s[c];
  return matmulTransB(us, v);
}

/** A random orthogonal n x n matrix: a product of n Householder reflections of random vectors. */
function randomOrthogonal(rng: Rng, n: number): Matrix {
  let q = identity(n);
  for (let k = 0; k < n; k++) {
    const v = rand(rng, n, 1);
    const vv = v.data.reduce((s, x) => s + x * x, 0);
    const h = sub(identity(n), scale(matmulTransB(v, v), 2 / vv));
    q = matmul(q, h);
  }
  return q;
}

function diag(rows: number, cols: number, values: number[]): Matrix {
  const m = matrix(rows, cols);
  values.forEach((x, i) => m.data[i * cols + i] = x);
  return m;
}

Deno.test("dense: products agree with the triple-loop definition (small and blocked paths, odd sizes)", () => {
  const rng = new Rng(1);
  for (const [m, k, n] of [[5, 3, 6], [7, 45, 9], [13, 33, 4], [1, 70, 1], [9, 8, 11]]) {
    const a = rand(rng, m, k), b = rand(rng, k, n);
    const ref = naiveMul(a, b);
    const tol = 1e-12 * k;
    assert(maxDiff(matmul(a, b), ref) < tol, `matmul ${m}x${k}x${n}`);
    assert(maxDiff(matmulTransA(transpose(a), b), ref) < tol, `matmulTransA ${m}x${k}x${n}`);
    assert(maxDiff(matmulTransB(a, transpose(b)), ref) < tol, `matmulTransB ${m}x${k}x${n}`);
  }
  for (const [r, c] of [[37, 13], [6, 9], [40, 1]]) {
    const k = rand(rng, r, c);
    const g = gram(k);
    assert(maxDiff(g, naiveMul(transpose(k), k)) < 1e-12 * r, `gram ${r}x${c}`);
    assertEquals(g.data, transpose(g).data, "gram is exactly symmetric");
    assert(maxDiff(gramRows(k), naiveMul(k, transpose(k))) < 1e-12 * c, `gramRows ${r}x${c}`);
  }
});

Deno.test("dense: transpose, add/sub/scale and float32 conversions", () => {
  const a = fromRows([[1, 2, 3], [4, 5, 6]]);
  assertEquals(transpose(a), { rows: 3, cols: 2, data: new Float64Array([1, 4, 2, 5, 3, 6]) });
  assertEquals(add(a, a).data, new Float64Array([2, 4, 6, 8, 10, 12]));
  assertEquals(sub(a, scale(a, 3)).data, new Float64Array([-2, -4, -6, -8, -10, -12]));
  const f = new Float32Array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]);
  const m = fromFloat32(2, 3, f);
  assertEquals(m.data[0], Math.fround(0.1));
  assertEquals(toFloat32(m), f);
  assertEquals(fromFloat32Transposed(2, 3, f).data, transpose(m).data);
  assertEquals(fromFloat32Transposed(2, 3, f).rows, 3);
});

Deno.test("dense: shape errors are LinalgError kind 'shape' naming both shapes", () => {
  const a = matrix(2, 3), b = matrix(4, 2);
  const e = assertThrows(() => matmul(a, b), LinalgError, "2x3");
  assertEquals(e.kind, "shape");
  assert(e.message.includes("4x2"), e.message);
  assertEquals(assertThrows(() => matmulTransA(a, b), LinalgError).kind, "shape");
  assertEquals(assertThrows(() => matmulTransB(a, b), LinalgError).kind, "shape");
  assertEquals(assertThrows(() => add(a, b), LinalgError).kind, "shape");
  assertEquals(assertThrows(() => matrix(2, 2, new Float64Array(3)), LinalgError, "got 3").kind, "shape");
  assertEquals(assertThrows(() => fromFloat32(2, 2, new Float32Array(5)), LinalgError).kind, "shape");
  assertEquals(
    assertThrows(() => solveCholesky(identity(3), matrix(2, 1)), LinalgError, "3 rows").kind,
    "shape",
  );
  assertEquals(assertThrows(() => lowRankApprox(matrix(4, 3), 4), LinalgError, "[1, min").kind, "shape");
});

Deno.test("cholesky: lower-triangular factor with L Lᵀ = A; solveCholesky solves many right-hand sides", () => {
  const rng = new Rng(2);
  const n = 50;
  const x = rand(rng, 80, n);
  const a = add(gram(x), identity(n)); // symmetric positive definite
  const l = cholesky(a);
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) assertEquals(l.data[i * n + j], 0);
  assert(maxDiff(matmulTransB(l, l), a) < 1e-12 * 80, "L Lᵀ = A");
  const xTrue = rand(rng, n, 7);
  const b = matmul(a, xTrue);
  const sol = solveCholesky(l, b);
  assertEquals([sol.rows, sol.cols], [n, 7]);
  assert(maxDiff(matmul(a, sol), b) < 1e-11 * 80, "residual A X - B");
  assert(maxDiff(sol, xTrue) < 1e-10, `solution error ${maxDiff(sol, xTrue)}`);
  // One right-hand side, a 1x1 system.
  assertEquals(solveCholesky(cholesky(fromRows([[4]])), fromRows([[6]])).data[0], 1.5);
});

Deno.test("cholesky: refusals carry the kind, the failing pivot and advice", () => {
  const notSquare = assertThrows(() => cholesky(matrix(2, 3)), LinalgError, "square");
  assertEquals(notSquare.kind, "not_square");

  // Rank 3 Gram matrix of size 5: the fourth pivot is zero to rounding.
  const rng = new Rng(3);
  const singular = assertThrows(() => cholesky(gram(rand(rng, 3, 5)), { name: "KᵀK" }), LinalgError, "KᵀK");
  assertEquals(singular.kind, "singular");
  assertEquals(singular.pivotIndex, 3);
  assert(singular.message.includes("pivot 3 of 5"), singular.message);
  assert(singular.message.includes("add more"), singular.message);

  const ill = assertThrows(() => cholesky(diag(2, 2, [1, 1e-13])), LinalgError, "ill-conditioned");
  assertEquals(ill.kind, "ill_conditioned");
  assertEquals(ill.pivotIndex, 1);
  assert(Math.abs(ill.conditionEstimate! / 1e13 - 1) < 1e-9, `condition ${ill.conditionEstimate}`);
  // A looser tolerance refuses what the default accepts.
  cholesky(diag(2, 2, [1, 1e-9]));
  assertEquals(
    assertThrows(() => cholesky(diag(2, 2, [1, 1e-9]), { tol: 1e-8 }), LinalgError).kind,
    "ill_conditioned",
  );

  const indefinite = assertThrows(
    () => cholesky(fromRows([[1, 2], [2, 1]])),
    LinalgError,
    "not positive definite",
  );
  assertEquals(indefinite.kind, "not_positive_definite");
  assertEquals(indefinite.pivot, -3);

  assertEquals(assertThrows(() => cholesky(fromRows([[1, 0], [NaN, 1]])), LinalgError).kind, "non_finite");
  assertEquals(assertThrows(() => cholesky(fromRows([[2, 1], [0, 2]])), LinalgError).kind, "not_symmetric");
  assertEquals(assertThrows(() => cholesky(matrix(3, 3)), LinalgError).kind, "singular");
});

Deno.test("choleskyCondition: (max L_ii / min L_ii)² equals the condition number of a diagonal matrix", () => {
  assertEquals(choleskyCondition(cholesky(diag(3, 3, [4, 1, 0.25]))), 16);
  const rng = new Rng(4);
  const a = add(gram(rand(rng, 60, 20)), identity(20));
  const est = choleskyCondition(cholesky(a));
  const ev = symmetricEigen(a, { vectors: false }).values;
  const exact = ev[0] / ev[ev.length - 1];
  assert(est >= 1 && est <= exact * (1 + 1e-9), `estimate ${est} must not exceed the true ${exact}`);
});

Deno.test("symmetricEigen: A V = V Λ with orthonormal V, eigenvalues descending", () => {
  const rng = new Rng(5);
  for (const n of [1, 2, 3, 40]) {
    const x = rand(rng, n, n);
    const a = scale(add(x, transpose(x)), 0.5);
    const { values, vectors } = symmetricEigen(a);
    const v = vectors!;
    for (let i = 1; i < n; i++) assert(values[i - 1] >= values[i], "descending");
    assert(orthoError(v) < 1e-13 * n, `orthonormal n=${n}`);
    const av = matmul(a, v), vl = matrix(n, n, v.data.slice());
    for (let r = 0; r < n; r++) for (let c = 0; c < n; c++) vl.data[r * n + c] *= values[c];
    assert(maxDiff(av, vl) < 1e-13 * n * Math.max(1, Math.abs(values[0])), `A V = V Λ, n=${n}`);
  }
  // Repeated eigenvalues and a diagonal matrix.
  const d = symmetricEigen(diag(4, 4, [2, -1, 2, 5]));
  assertEquals(Array.from(d.values), [5, 2, 2, -1]);
  assert(orthoError(d.vectors!) < 1e-15);
});

Deno.test("svd: random tall, wide and square matrices reconstruct with orthonormal factors", () => {
  const rng = new Rng(6);
  for (const [m, n] of [[31, 17], [17, 31], [64, 64], [9, 1], [130, 70]]) {
    const a = rand(rng, m, n);
    const { u, s, v } = svd(a);
    const k = Math.min(m, n);
    assertEquals([u.rows, u.cols, s.length, v.rows, v.cols], [m, k, k, n, k]);
    for (let i = 1; i < k; i++) assert(s[i - 1] >= s[i], "descending");
    const rel = Math.sqrt(sumSq(sub(reconstruct(u, s, v), a))) / Math.sqrt(sumSq(a));
    assert(rel < 1e-13, `${m}x${n} reconstruction ${rel}`);
    assert(orthoError(u) < 1e-13, `${m}x${n} UᵀU = I: ${orthoError(u)}`);
    assert(orthoError(v) < 1e-13, `${m}x${n} VᵀV = I: ${orthoError(v)}`);
  }
});

function sumSq(m: Matrix): number {
  return m.data.reduce((s, x) => s + x * x, 0);
}

Deno.test("svd: known singular values, including graded ones down to 1e-9 of the largest", () => {
  const d = svd(diag(6, 4, [3, -7, 0.5, 2]));
  assertEquals(Array.from(d.s), [7, 3, 2, 0.5]);
  assert(orthoError(d.u) < 1e-15 && orthoError(d.v) < 1e-15);

  const rng = new Rng(7);
  const n = 24;
  const truth = Array.from({ length: n }, (_, i) => 10 ** (-9 * i / (n - 1))); // 1 .. 1e-9
  const q1 = firstCols(randomOrthogonal(rng, 40), n), q2 = randomOrthogonal(rng, n);
  const a = matmulTransB(matmul(q1, diag(n, n, truth)), q2); // 40 x 24 with singular values `truth`
  const { s } = svd(a);
  for (let i = 0; i < n; i++) {
    assert(Math.abs(s[i] - truth[i]) < 1e-14 * 40, `σ${i} = ${s[i]}, expected ${truth[i]}`);
  }
});

function firstCols(q: Matrix, k: number): Matrix {
  const out = matrix(q.rows, k);
  for (let r = 0; r < q.rows; r++) for (let c = 0; c < k; c++) out.data[r * k + c] = q.data[r * q.cols + c];
  return out;
}

Deno.test("svd: rank-deficient and zero matrices keep orthonormal U and V", () => {
  const rng = new Rng(8);
  const a = matmul(rand(rng, 40, 4), rand(rng, 4, 30)); // rank 4
  const { u, s, v } = svd(a);
  assert(s[3] > 1e-3 * s[0], "four clear singular values");
  for (let i = 4; i < 30; i++) assert(s[i] < 1e-13 * s[0], `σ${i} = ${s[i]} should vanish`);
  assert(orthoError(u) < 1e-12, `UᵀU = I: ${orthoError(u)}`);
  assert(orthoError(v) < 1e-12, `VᵀV = I: ${orthoError(v)}`);
  assert(maxDiff(reconstruct(u, s, v), a) < 1e-12 * s[0], "reconstruction");

  const z = svd(matrix(5, 3));
  assertEquals(Array.from(z.s), [0, 0, 0]);
  assert(orthoError(z.u) < 1e-15 && orthoError(z.v) < 1e-15, "completed bases");
  // Duplicated columns: rank 1.
  const dup = svd(fromRows([[1, 1, 1], [2, 2, 2], [3, 3, 3], [4, 4, 4]]));
  assert(Math.abs(dup.s[0] - Math.sqrt(3 * 30)) < 1e-13, `σ0 ${dup.s[0]}`);
  assert(dup.s[1] < 1e-14 && orthoError(dup.u) < 1e-13, "rank 1");
});

Deno.test("lowRankApprox: up·down is the best rank-k approximation (Eckart-Young error)", () => {
  const rng = new Rng(9);
  const a = add(matmul(rand(rng, 50, 3), rand(rng, 3, 36)), scale(rand(rng, 50, 36), 1e-3));
  const full = svd(a).s;
  for (const k of [1, 3, 10]) {
    const { up, down, s } = lowRankApprox(a, k);
    assertEquals([up.rows, up.cols, down.rows, down.cols, s.length], [50, k, k, 36, k]);
    const err = Math.sqrt(sumSq(sub(matmul(up, down), a)));
    let tail = 0;
    for (let i = k; i < full.length; i++) tail += full[i] ** 2;
    assert(Math.abs(err - Math.sqrt(tail)) < 1e-10 * full[0], `k=${k}: error ${err} vs ${Math.sqrt(tail)}`);
    assert(orthoError(transpose(down)) < 1e-13, "down has orthonormal rows");
  }
});
