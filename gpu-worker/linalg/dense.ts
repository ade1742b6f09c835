/**
 * Dense float64 linear algebra on row-major matrices, for the closed-form pieces of the methods (Custom
 * Diffusion's constrained merge, low-rank compression of weight deltas): products, Gram matrices, Cholesky
 * factorization and solves (never an explicit inverse), a symmetric eigensolver and a thin SVD.
 *
 * Speed: every large product goes through one register-blocked kernel computing C = A Bᵀ as 4x4 blocks of
 * dot products over contiguous rows (8 loads per 16 multiply-adds, nothing written in the inner loop); the
 * other products transpose their operands into that form first (O(size), negligible next to the product), or,
 * when the inner dimension is small, run the plain i-k-j loop. Symmetric results (Gram matrices) compute only
 * the upper triangle. A 15400x768 Gram matrix takes ~1.6 s on one core of a recent Xeon.
 *
 * The SVD is one-sided Jacobi (accurate in float64: orthonormal columns to ~m·eps, singular values to
 * max(m, n)·eps·σ₁ or better), preconditioned by the eigenvectors of AᵀA (Householder tridiagonalization +
 * implicit QL), level by level for graded matrices: the rotated columns are then nearly orthogonal and
 * Jacobi only polishes. Measured on a shared 2-core Xeon: 1280x768 random ~2 s, 1280x768 with singular
 * values spread over 12 decades ~5 s, rank 16 ~3 s (plain one-sided Jacobi would take minutes).
 *
 * Failures throw {@link LinalgError} with a `kind` ("shape", "not_square", "singular", "ill_conditioned",
 * ...) and, for factorizations, the pivot that failed.
 *
 * @example
 * ```ts
 * const k = fromFloat32(200, 64, features);  // 200 feature rows of dimension 64
 * const c = gram(k);                         // kᵀk, 64x64
 * const l = cholesky(c);                     // throws LinalgError { kind: "singular" } if rank < 64
 * const x = solveCholesky(l, b);             // c x = b, b: 64 x r
 * const { u, s, v } = svd(k);                // u 200x64, s[64] descending, v 64x64
 * const { up, down } = lowRankApprox(k, 8);  // up 200x8 = U₈S₈, down 8x64 = V₈ᵀ
 * ```
 */

const EPS = Number.EPSILON;

/** A row-major matrix: entry (i, j) is `data[i * cols + j]`. */
export interface Matrix {
  rows: number;
  cols: number;
  data: Float64Array;
}

/** What went wrong in a {@link LinalgError}. */
export type LinalgErrorKind =
  | "shape" // operands' sizes do not fit together
  | "not_square" // a square matrix was needed
  | "not_symmetric" // a symmetric matrix was needed
  | "non_finite" // NaN or ±Infinity in the input
  | "singular" // a pivot is zero (or negative) to working precision: rank deficient
  | "ill_conditioned" // a pivot is positive but below the relative tolerance
  | "not_positive_definite" // a clearly negative pivot: the matrix is indefinite
  | "no_convergence"; // an iteration did not converge

/** Measurements attached to a {@link LinalgError} (factorization failures). */
export interface LinalgErrorDetails {
  /** Index of the failing pivot (0-based). */
  pivotIndex?: number;
  /** The pivot itself (for Cholesky: the value whose square root would be the diagonal of L). */
  pivot?: number;
  /** The pivot divided by the largest diagonal entry of the input. */
  relativePivot?: number;
  /** Estimated condition number (largest diagonal entry / pivot). */
  conditionEstimate?: number;
  /** Size of the matrix. */
  n?: number;
}

/** A failed linear-algebra operation; `kind` says why, the details say by how much. */
export class LinalgError extends Error {
  readonly kind: LinalgErrorKind;
  readonly pivotIndex?: number;
  readonly pivot?: number;
  readonly relativePivot?: number;
  readonly conditionEstimate?: number;
  readonly n?: number;

  constructor(kind: LinalgErrorKind, message: string, details: LinalgErrorDetails = {}) {
    super(message);
    this.name = "LinalgError";
    this.kind = kind;
    this.pivotIndex = details.pivotIndex;
    this.pivot = details.pivot;
    this.relativePivot = details.relativePivot;
    this.conditionEstimate = details.conditionEstimate;
    this.n = details.n;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Construction and conversion

function shape(m: Matrix): string {
  return `${m.rows}x${m.cols}`;
}

function checkDims(rows: number, cols: number, what: string): void {
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 0 || cols < 0) {
    throw new LinalgError("shape", `${what}: dimensions must be non-negative integers, got ${rows}x${cols}`);
  }
}

/** A matrix over `data` (not copied), or zeros; checks that `data` has rows·cols entries. */
export function matrix(rows: number, cols: number, data?: Float64Array): Matrix {
  checkDims(rows, cols, "matrix");
  if (data === undefined) return { rows, cols, data: new Float64Array(rows * cols) };
  if (data.length !== rows * cols) {
    throw new LinalgError(
      "shape",
      `matrix: expected ${rows}x${cols} = ${rows * cols} values, got ${data.length}`,
    );
  }
  return { rows, cols, data };
}

/** rows x cols of zeros. */
export function zeros(rows: number, cols: number): Matrix {
  return matrix(rows, cols);
}

/** The n x n identity. */
export function identity(n: number): Matrix {
  const m = matrix(n, n);
  for (let i = 0; i < n; i++) m.data[i * n + i] = 1;
  return m;
}

/** A matrix from nested arrays (all rows the same length). */
export function fromRows(rows: ArrayLike<number>[]): Matrix {
  const cols = rows.length ? rows[0].length : 0;
  const m = matrix(rows.length, cols);
  rows.forEach((r, i) => {
    if (r.length !== cols) {
      throw new LinalgError("shape", `fromRows: row ${i} has ${r.length} entries, expected ${cols}`);
    }
    for (let j = 0; j < cols; j++) m.data[i * cols + j] = r[j];
  });
  return m;
}

/** A float64 copy of a row-major float32 [rows, cols] array. */
export function fromFloat32(rows: number, cols: number, src: Float32Array): Matrix {
  checkDims(rows, cols, "fromFloat32");
  if (src.length !== rows * cols) {
    throw new LinalgError(
      "shape",
      `fromFloat32: expected ${rows}x${cols} = ${rows * cols} values, got ${src.length}`,
    );
  }
  return { rows, cols, data: Float64Array.from(src) };
}

/**
 * The transpose (cols x rows, float64) of a row-major float32 [rows, cols] array, in one pass: the layout the
 * product kernel wants for Gram matrices of tall feature arrays, without an intermediate float64 copy.
 */
export function fromFloat32Transposed(rows: number, cols: number, src: Float32Array): Matrix {
  checkDims(rows, cols, "fromFloat32Transposed");
  if (src.length !== rows * cols) {
    throw new LinalgError(
      "shape",
      `fromFloat32Transposed: expected ${rows}x${cols} = ${rows * cols} values, got ${src.length}`,
    );
  }
  const out = new Float64Array(rows * cols);
  transposeInto(src, rows, cols, out);
  return { rows: cols, cols: rows, data: out };
}

/** A float32 copy (rounded to nearest). */
export function toFloat32(m: Matrix): Float32Array {
  return Float32Array.from(m.data);
}

/** An independent copy. */
export function clone(m: Matrix): Matrix {
  return { rows: m.rows, cols: m.cols, data: m.data.slice() };
}

// ---------------------------------------------------------------------------------------------------------
// Element-wise operations

function sameShape(a: Matrix, b: Matrix, op: string): void {
  if (a.rows !== b.rows || a.cols !== b.cols) {
    throw new LinalgError(
      "shape",
      `${op}: operands must have the same shape, got ${shape(a)} and ${shape(b)}`,
    );
  }
}

/** a + b. */
export function add(a: Matrix, b: Matrix): Matrix {
  sameShape(a, b, "add");
  const out = new Float64Array(a.data.length);
  for (let i = 0; i < out.length; i++) out[i] = a.data[i] + b.data[i];
  return { rows: a.rows, cols: a.cols, data: out };
}

/** a - b. */
export function sub(a: Matrix, b: Matrix): Matrix {
  sameShape(a, b, "sub");
  const out = new Float64Array(a.data.length);
  for (let i = 0; i < out.length; i++) out[i] = a.data[i] - b.data[i];
  return { rows: a.rows, cols: a.cols, data: out };
}

/** s · a. */
export function scale(a: Matrix, s: number): Matrix {
  const out = new Float64Array(a.data.length);
  for (let i = 0; i < out.length; i++) out[i] = a.data[i] * s;
  return { rows: a.rows, cols: a.cols, data: out };
}

/** Frobenius norm, computed with scaling so that huge or tiny entries neither overflow nor underflow. */
export function frobeniusNorm(a: Matrix | Float64Array): number {
  const d = a instanceof Float64Array ? a : a.data;
  let big = 0;
  for (let i = 0; i < d.length; i++) big = Math.max(big, Math.abs(d[i]));
  if (big === 0 || !Number.isFinite(big)) return big;
  let sum = 0;
  for (let i = 0; i < d.length; i++) {
    const t = d[i] / big;
    sum += t * t;
  }
  return big * Math.sqrt(sum);
}

/** Largest absolute entry. */
export function maxAbs(a: Matrix | Float64Array): number {
  const d = a instanceof Float64Array ? a : a.data;
  let big = 0;
  for (let i = 0; i < d.length; i++) big = Math.max(big, Math.abs(d[i]));
  return big;
}

/** Whether every entry is finite. */
export function allFinite(d: ArrayLike<number>): boolean {
  for (let i = 0; i < d.length; i++) if (!Number.isFinite(d[i])) return false;
  return true;
}

// ---------------------------------------------------------------------------------------------------------
// Products

/** Cache-blocked transpose of a row-major [rows, cols] array into `out` ([cols, rows]). */
function transposeInto(src: ArrayLike<number>, rows: number, cols: number, out: Float64Array): void {
  const B = 32;
  for (let i0 = 0; i0 < rows; i0 += B) {
    const i1 = Math.min(rows, i0 + B);
    for (let j0 = 0; j0 < cols; j0 += B) {
      const j1 = Math.min(cols, j0 + B);
      for (let i = i0; i < i1; i++) {
        const ro = i * cols;
        for (let j = j0; j < j1; j++) out[j * rows + i] = src[ro + j];
      }
    }
  }
}

/** aᵀ. */
export function transpose(a: Matrix): Matrix {
  const out = new Float64Array(a.data.length);
  transposeInto(a.data, a.rows, a.cols, out);
  return { rows: a.cols, cols: a.rows, data: out };
}

/** Dot product of a[ao .. ao+len) and b[bo .. bo+len), four independent accumulators. */
function dot(a: Float64Array, ao: number, b: Float64Array, bo: number, len: number): number {
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  const len4 = len - (len % 4);
  let t = 0;
  for (; t < len4; t += 4) {
    s0 += a[ao + t] * b[bo + t];
    s1 += a[ao + t + 1] * b[bo + t + 1];
    s2 += a[ao + t + 2] * b[bo + t + 2];
    s3 += a[ao + t + 3] * b[bo + t + 3];
  }
  for (; t < len; t++) s0 += a[ao + t] * b[bo + t];
  return (s0 + s1) + (s2 + s3);
}

/** y[yo + t] += alpha · x[xo + t] for t < len. */
function axpy(y: Float64Array, yo: number, x: Float64Array, xo: number, len: number, alpha: number): void {
  for (let t = 0; t < len; t++) y[yo + t] += alpha * x[xo + t];
}

/**
 * The product kernel: out[i, j] = Σ_t a[i, t] · b[j, t] for a [na, len] and b [nb, len] (C = A Bᵀ), as 4x4
 * register blocks of dot products over contiguous rows. With `symmetric` (a and b the same array) only
 * blocks on or above the diagonal are computed and the rest is mirrored. The hot loops live in small
 * functions of their own: V8 optimizes those once and for all, where a long function with nested hot loops
 * gets stuck in on-stack-replacement churn (measured 5x slower on repeated calls).
 */
function abT(
  a: Float64Array,
  na: number,
  b: Float64Array,
  nb: number,
  len: number,
  symmetric: boolean,
): Float64Array {
  const out = new Float64Array(na * nb);
  const na4 = na - (na % 4), nb4 = nb - (nb % 4);
  for (let i = 0; i < na4; i += 4) {
    for (let j = symmetric ? i : 0; j < nb4; j += 4) {
      block4x4(a, i * len, b, j * len, len, out, i * nb + j, nb);
    }
    for (let j = nb4; j < nb; j++) block4x1(a, i * len, b, j * len, len, out, i * nb + j, nb);
  }
  for (let i = na4; i < na; i++) {
    for (let j = symmetric ? i : 0; j < nb; j++) out[i * nb + j] = dot(a, i * len, b, j * len, len);
  }
  if (symmetric) {
    for (let i = 0; i < na; i++) {
      for (let j = i + 1; j < nb; j++) out[j * nb + i] = out[i * nb + j];
    }
  }
  return out;
}

/** out[o + r·nb + c] = dot(a row r, b row c) for r, c < 4, rows of length len starting at a0, b0. */
function block4x4(
  a: Float64Array,
  a0: number,
  b: Float64Array,
  b0: number,
  len: number,
  out: Float64Array,
  o: number,
  nb: number,
): void {
  const a1 = a0 + len, a2 = a1 + len, a3 = a2 + len;
  const b1 = b0 + len, b2 = b1 + len, b3 = b2 + len;
  let c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
  let c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
  for (let t = 0; t < len; t++) {
    const x0 = a[a0 + t], x1 = a[a1 + t], x2 = a[a2 + t], x3 = a[a3 + t];
    const y0 = b[b0 + t], y1 = b[b1 + t], y2 = b[b2 + t], y3 = b[b3 + t];
    c00 += x0 * y0;
    c01 += x0 * y1;
    c02 += x0 * y2;
    c03 += x0 * y3;
    c10 += x1 * y0;
    c11 += x1 * y1;
    c12 += x1 * y2;
    c13 += x1 * y3;
    c20 += x2 * y0;
    c21 += x2 * y1;
    c22 += x2 * y2;
    c23 += x2 * y3;
    c30 += x3 * y0;
    c31 += x3 * y1;
    c32 += x3 * y2;
    c33 += x3 * y3;
  }
  out[o] = c00, out[o + 1] = c01, out[o + 2] = c02, out[o + 3] = c03;
  o += nb;
  out[o] = c10, out[o + 1] = c11, out[o + 2] = c12, out[o + 3] = c13;
  o += nb;
  out[o] = c20, out[o + 1] = c21, out[o + 2] = c22, out[o + 3] = c23;
  o += nb;
  out[o] = c30, out[o + 1] = c31, out[o + 2] = c32, out[o + 3] = c33;
}

/** out[o + r·nb] = dot(a row r, b row) for r < 4. */
function block4x1(
  a: Float64Array,
  a0: number,
  b: Float64Array,
  b0: number,
  len: number,
  out: Float64Array,
  o: number,
  nb: number,
): void {
  const a1 = a0 + len, a2 = a1 + len, a3 = a2 + len;
  let c0 = 0, c1 = 0, c2 = 0, c3 = 0;
  for (let t = 0; t < len; t++) {
    const y = b[b0 + t];
    c0 += a[a0 + t] * y;
    c1 += a[a1 + t] * y;
    c2 += a[a2 + t] * y;
    c3 += a[a3 + t] * y;
  }
  out[o] = c0;
  out[o + nb] = c1;
  out[o + 2 * nb] = c2;
  out[o + 3 * nb] = c3;
}

/** Below this inner dimension the plain i-k-j loop beats transposing for the blocked kernel. */
const SMALL_INNER = 8;

/** a b (a [m, k], b [k, n]). */
export function matmul(a: Matrix, b: Matrix): Matrix {
  if (a.cols !== b.rows) {
    throw new LinalgError(
      "shape",
      `matmul: a is ${shape(a)}, b is ${shape(b)}; a's columns must equal b's rows`,
    );
  }
  const m = a.rows, k = a.cols, n = b.cols;
  if (k > SMALL_INNER) {
    return { rows: m, cols: n, data: abT(a.data, m, transpose(b).data, n, k, false) };
  }
  const out = new Float64Array(m * n);
  const ad = a.data, bd = b.data;
  for (let i = 0; i < m; i++) {
    const oi = i * n;
    for (let t = 0; t < k; t++) {
      const x = ad[i * k + t];
      if (x !== 0) axpy(out, oi, bd, t * n, n, x);
    }
  }
  return { rows: m, cols: n, data: out };
}

/** aᵀ b (a [r, m], b [r, n]) without forming aᵀ explicitly for small r. */
export function matmulTransA(a: Matrix, b: Matrix): Matrix {
  if (a.rows !== b.rows) {
    throw new LinalgError(
      "shape",
      `matmulTransA: a is ${shape(a)}, b is ${shape(b)}; aᵀb needs equal row counts`,
    );
  }
  const r = a.rows, m = a.cols, n = b.cols;
  if (r > SMALL_INNER) {
    return { rows: m, cols: n, data: abT(transpose(a).data, m, transpose(b).data, n, r, a === b) };
  }
  const out = new Float64Array(m * n);
  const ad = a.data, bd = b.data;
  // i-k-j: row i of the result stays in cache while the r (few) rows of b stream past it.
  for (let i = 0; i < m; i++) {
    for (let t = 0; t < r; t++) {
      const x = ad[t * m + i];
      if (x !== 0) axpy(out, i * n, bd, t * n, n, x);
    }
  }
  return { rows: m, cols: n, data: out };
}

/** a bᵀ (a [m, k], b [n, k]). */
export function matmulTransB(a: Matrix, b: Matrix): Matrix {
  if (a.cols !== b.cols) {
    throw new LinalgError(
      "shape",
      `matmulTransB: a is ${shape(a)}, b is ${shape(b)}; abᵀ needs equal column counts`,
    );
  }
  return { rows: a.rows, cols: b.rows, data: abT(a.data, a.rows, b.data, b.rows, a.cols, a === b) };
}

/** kᵀ k (cols x cols, exactly symmetric; only the upper triangle is computed). */
export function gram(k: Matrix): Matrix {
  return gramRows(transpose(k));
}

/** a aᵀ (rows x rows, exactly symmetric; only the upper triangle is computed). */
export function gramRows(a: Matrix): Matrix {
  return { rows: a.rows, cols: a.rows, data: abT(a.data, a.rows, a.data, a.rows, a.cols, true) };
}

// ---------------------------------------------------------------------------------------------------------
// Cholesky

/** Options for {@link cholesky}. */
export interface CholeskyOptions {
  /**
   * Relative pivot tolerance: a pivot at or below `tol` times the largest diagonal entry is refused
   * ("ill_conditioned", or "singular" when it is at rounding level). Default 1e-12.
   */
  tol?: number;
  /** What the matrix is, for error messages (e.g. "C = KᵀK"). */
  name?: string;
}

/**
 * Lower-triangular L with a = L Lᵀ, for symmetric positive definite a (only the lower triangle is read,
 * after checking symmetry to 1e-8 relative). Refuses, with a {@link LinalgError} naming the pivot, when a
 * pivot is at or below `tol` times the largest diagonal entry: kind "singular" when it is zero or negative
 * to rounding (rank deficient), "ill_conditioned" when it is tiny but clearly positive, and
 * "not_positive_definite" when it is clearly negative.
 */
export function cholesky(a: Matrix, options: CholeskyOptions = {}): Matrix {
  const name = options.name ?? "matrix";
  const tol = options.tol ?? 1e-12;
  if (a.rows !== a.cols) {
    throw new LinalgError("not_square", `cholesky: ${name} must be square, got ${shape(a)}`);
  }
  const n = a.rows, ad = a.data;
  if (!allFinite(ad)) {
    throw new LinalgError("non_finite", `cholesky: ${name} has NaN or infinite entries`, { n });
  }
  const big = maxAbs(ad);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < i; j++) {
      if (Math.abs(ad[i * n + j] - ad[j * n + i]) > 1e-8 * big) {
        throw new LinalgError(
          "not_symmetric",
          `cholesky: ${name} must be symmetric, but entry (${i}, ${j}) = ${ad[i * n + j]} differs from ` +
            `(${j}, ${i}) = ${ad[j * n + i]}`,
          { n },
        );
      }
    }
  }
  let maxDiag = 0;
  for (let i = 0; i < n; i++) maxDiag = Math.max(maxDiag, ad[i * n + i]);
  const l = new Float64Array(n * n);
  // Rounding level of a pivot: a rank-deficient matrix leaves pivots of about n·eps·maxDiag, either sign.
  const roundoff = 4 * Math.max(n, 1) * EPS;
  for (let i = 0; i < n; i++) {
    const ri = i * n;
    for (let j = 0; j < i; j++) {
      const rj = j * n;
      l[ri + j] = (ad[ri + j] - dot(l, ri, l, rj, j)) / l[rj + j];
    }
    const pivot = ad[ri + i] - dot(l, ri, l, ri, i);
    const rel = maxDiag > 0 ? pivot / maxDiag : pivot > 0 ? Infinity : pivot === 0 ? 0 : -Infinity;
    if (!(rel > tol)) throw pivotError(name, i, n, pivot, rel, maxDiag, tol, roundoff);
    l[ri + i] = Math.sqrt(pivot);
  }
  return { rows: n, cols: n, data: l };
}

function pivotError(
  name: string,
  i: number,
  n: number,
  pivot: number,
  rel: number,
  maxDiag: number,
  tol: number,
  roundoff: number,
): LinalgError {
  const where = `pivot ${i} of ${n} is ${pivot.toExponential(3)}, ${rel.toExponential(3)} of the largest ` +
    `diagonal entry ${maxDiag.toExponential(3)}`;
  const details = {
    pivotIndex: i,
    pivot,
    relativePivot: rel,
    conditionEstimate: rel > 0 ? 1 / rel : Infinity,
    n,
  };
  if (rel < -Math.sqrt(EPS)) {
    return new LinalgError(
      "not_positive_definite",
      `cholesky: ${name} is not positive definite: ${where} (clearly negative). Cholesky needs a symmetric ` +
        `positive definite matrix, such as a Gram matrix XᵀX of independent columns.`,
      details,
    );
  }
  if (rel <= roundoff) {
    return new LinalgError(
      "singular",
      `cholesky: ${name} is singular to working precision: ${where}, i.e. row/column ${i} is a linear ` +
        `combination of rows/columns 0..${i - 1}. Remove the dependent data, add more (and more varied) ` +
        `data, or add a ridge λI.`,
      details,
    );
  }
  return new LinalgError(
    "ill_conditioned",
    `cholesky: ${name} is too ill-conditioned: ${where}, below the tolerance ${tol} (condition number at ` +
      `least ~${(1 / rel).toExponential(1)}; a solve would lose about ${Math.round(-Math.log10(rel))} ` +
      `digits). Row/column ${i} is nearly a combination of the earlier ones: add more varied data, remove ` +
      `near-duplicates, or add a ridge λI.`,
    details,
  );
}

/**
 * Condition-number estimate of a = L Lᵀ from its Cholesky factor: (max L_ii / min L_ii)². A lower bound on
 * the true 2-norm condition number, usually within a small factor of it.
 */
export function choleskyCondition(l: Matrix): number {
  if (l.rows !== l.cols) {
    throw new LinalgError("not_square", `choleskyCondition: L must be square, got ${shape(l)}`);
  }
  const n = l.rows;
  if (n === 0) return 1;
  let lo = Infinity, hi = 0;
  for (let i = 0; i < n; i++) {
    const v = Math.abs(l.data[i * n + i]);
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  return lo === 0 ? Infinity : (hi / lo) ** 2;
}

/**
 * X with a X = B, given a's Cholesky factor L (a = L Lᵀ): forward substitution L Y = B, then back
 * substitution Lᵀ X = Y, on all r right-hand sides (columns of B, [n, r]) at once, row by row.
 */
export function solveCholesky(l: Matrix, b: Matrix): Matrix {
  if (l.rows !== l.cols) {
    throw new LinalgError("not_square", `solveCholesky: L must be square, got ${shape(l)}`);
  }
  const n = l.rows, r = b.cols;
  if (b.rows !== n) {
    throw new LinalgError(
      "shape",
      `solveCholesky: L is ${shape(l)}, so B must have ${n} rows, got ${shape(b)}`,
    );
  }
  const ld = l.data, x = b.data.slice();
  for (let i = 0; i < n; i++) {
    if (!(ld[i * n + i] !== 0)) {
      throw new LinalgError("singular", `solveCholesky: L has a zero diagonal entry at ${i}`, {
        pivotIndex: i,
        n,
      });
    }
  }
  // Forward: row i of Y = (row i of B - Σ_{k<i} L_ik · row k of Y) / L_ii.
  for (let i = 0; i < n; i++) {
    const ri = i * r;
    for (let k = 0; k < i; k++) {
      const lik = ld[i * n + k];
      if (lik !== 0) axpy(x, ri, x, k * r, r, -lik);
    }
    const d = ld[i * n + i];
    for (let c = 0; c < r; c++) x[ri + c] /= d;
  }
  // Backward: once row k of X is final, remove its part (Lᵀ)_ik = L_ki from the rows above.
  for (let k = n - 1; k >= 0; k--) {
    const rk = k * r, d = ld[k * n + k];
    for (let c = 0; c < r; c++) x[rk + c] /= d;
    for (let i = 0; i < k; i++) {
      const lki = ld[k * n + i];
      if (lki !== 0) axpy(x, i * r, x, rk, r, -lki);
    }
  }
  return { rows: n, cols: r, data: x };
}

// ---------------------------------------------------------------------------------------------------------
// Symmetric eigenproblem

/** Eigen-decomposition of a symmetric matrix. */
export interface SymmetricEigen {
  /** Eigenvalues, descending. */
  values: Float64Array;
  /** n x n, column i the unit eigenvector of values[i] (absent when not asked for). */
  vectors?: Matrix;
}

/**
 * Eigenvalues (descending) and, unless `vectors: false`, orthonormal eigenvectors of a symmetric matrix, by
 * Householder tridiagonalization and the implicit QL iteration with Wilkinson-style shifts. Only symmetry
 * to 1e-8 relative is checked; the upper triangle is what is used.
 */
export function symmetricEigen(a: Matrix, options: { vectors?: boolean } = {}): SymmetricEigen {
  if (a.rows !== a.cols) {
    throw new LinalgError("not_square", `symmetricEigen: the matrix must be square, got ${shape(a)}`);
  }
  const n = a.rows;
  if (!allFinite(a.data)) {
    throw new LinalgError("non_finite", "symmetricEigen: the matrix has NaN or infinite entries");
  }
  const big = maxAbs(a.data);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < i; j++) {
      if (Math.abs(a.data[i * n + j] - a.data[j * n + i]) > 1e-8 * big) {
        throw new LinalgError(
          "not_symmetric",
          `symmetricEigen: the matrix must be symmetric, but (${i}, ${j}) = ${a.data[i * n + j]} and ` +
            `(${j}, ${i}) = ${a.data[j * n + i]}`,
        );
      }
    }
  }
  const wantVectors = options.vectors ?? true;
  const { values, rows } = eigenRows(a.data, n, wantVectors);
  if (!wantVectors || !rows) return { values };
  const vt: Matrix = { rows: n, cols: n, data: rows };
  return { values, vectors: transpose(vt) };
}

/** Eigenvalues descending and (optionally) eigenvectors as the rows of an n x n array. */
function eigenRows(
  src: Float64Array,
  n: number,
  wantVectors: boolean,
): { values: Float64Array; rows: Float64Array | null } {
  const a = src.slice();
  const d = new Float64Array(n), e = new Float64Array(n), taus = new Float64Array(n);
  tridiagonalize(a, n, d, e, taus);
  let zt: Float64Array | null = null;
  if (wantVectors) zt = transpose({ rows: n, cols: n, data: householderProduct(a, n, taus) }).data;
  tridiagonalQL(d, e, n, zt);
  const order = Array.from({ length: n }, (_, i) => i).sort((i, j) => d[j] - d[i]);
  const values = Float64Array.from(order, (i) => d[i]);
  if (!zt) return { values, rows: null };
  const rows = new Float64Array(n * n);
  order.forEach((src, dst) => rows.set(zt!.subarray(src * n, src * n + n), dst * n));
  return { values, rows };
}

/**
 * Householder reduction of the symmetric `a` (overwritten) to tridiagonal T = Qᵀ a Q: diagonal in `d`,
 * subdiagonal T[k+1][k] in e[k] (e[n-1] = 0). Reflector k is H_k = I - tau_k v vᵀ acting on indices
 * k+1..n-1, with v kept in row k, columns k+1..n-1 of `a`.
 */
function tridiagonalize(
  a: Float64Array,
  n: number,
  d: Float64Array,
  e: Float64Array,
  taus: Float64Array,
): void {
  const p = new Float64Array(n), w = new Float64Array(n);
  for (let k = 0; k < n - 2; k++) {
    const rk = k * n, v0 = rk + k + 1, s = n - k - 1;
    d[k] = a[rk + k];
    let big = 0;
    for (let j = 0; j < s; j++) big = Math.max(big, Math.abs(a[v0 + j]));
    if (big === 0) {
      e[k] = 0;
      taus[k] = 0;
      continue;
    }
    let sum = 0;
    for (let j = 0; j < s; j++) {
      const t = a[v0 + j] / big;
      sum += t * t;
    }
    const alpha = big * Math.sqrt(sum), x0 = a[v0];
    const beta = x0 >= 0 ? -alpha : alpha; // H x = beta e1, sign chosen to avoid cancellation in x0 - beta
    a[v0] = x0 - beta;
    const tau = 1 / (alpha * (alpha + Math.abs(x0)));
    e[k] = beta;
    taus[k] = tau;
    // Two-sided update of the trailing block A2 (rows/cols k+1..): A2 -= v wᵀ + w vᵀ with
    // p = tau A2 v, w = p - (tau/2)(pᵀv) v.
    let pv = 0;
    for (let i = 0; i < s; i++) {
      const pi = tau * dot(a, (k + 1 + i) * n + k + 1, a, v0, s);
      p[i] = pi;
      pv += pi * a[v0 + i];
    }
    const half = 0.5 * tau * pv;
    for (let i = 0; i < s; i++) w[i] = p[i] - half * a[v0 + i];
    for (let i = 0; i < s; i++) {
      const ro = (k + 1 + i) * n + k + 1;
      axpy(a, ro, w, 0, s, -a[v0 + i]);
      axpy(a, ro, a, v0, s, -w[i]);
    }
  }
  if (n >= 2) {
    d[n - 2] = a[(n - 2) * n + n - 2];
    e[n - 2] = a[(n - 2) * n + n - 1];
  }
  if (n >= 1) d[n - 1] = a[n * n - 1];
  if (n >= 1) e[n - 1] = 0;
}

/** Q = H_0 H_1 ... H_{n-3} from the reflectors left in `a` by {@link tridiagonalize}, accumulated backwards. */
function householderProduct(a: Float64Array, n: number, taus: Float64Array): Float64Array {
  const q = identity(n).data;
  const u = new Float64Array(n);
  for (let k = n - 3; k >= 0; k--) {
    const tau = taus[k];
    if (tau === 0) continue;
    const v0 = k * n + k + 1, s = n - k - 1;
    // u = vᵀ Q[k+1.., k+1..]; Q[k+1.., k+1..] -= tau v u
    u.fill(0, 0, s);
    for (let i = 0; i < s; i++) {
      const vi = a[v0 + i];
      if (vi !== 0) axpy(u, 0, q, (k + 1 + i) * n + k + 1, s, vi);
    }
    for (let i = 0; i < s; i++) {
      const f = tau * a[v0 + i];
      if (f !== 0) axpy(q, (k + 1 + i) * n + k + 1, u, 0, s, -f);
    }
  }
  return q;
}

/**
 * Eigenvalues of the symmetric tridiagonal (d, e) by implicit QL with shifts, in place in `d`. Each plane
 * rotation is applied to rows i, i+1 of `zt` (eigenvectors as rows), when given.
 */
function tridiagonalQL(d: Float64Array, e: Float64Array, n: number, zt: Float64Array | null): void {
  // An off-diagonal is negligible next to its two diagonal neighbours, or next to the whole matrix (the
  // latter keeps clusters of tiny eigenvalues, e.g. of a rank-deficient Gram matrix, from stalling).
  let norm = 0;
  for (let i = 0; i < n; i++) {
    norm = Math.max(norm, Math.abs(d[i]) + Math.abs(e[i]) + (i ? Math.abs(e[i - 1]) : 0));
  }
  const floor = EPS * norm;
  for (let l = 0; l < n; l++) {
    for (let iter = 0;; iter++) {
      // Find the first negligible off-diagonal at or after l: the block l..m is unreduced.
      let m = l;
      for (; m < n - 1; m++) {
        const em = Math.abs(e[m]);
        if (em <= floor || em <= EPS * (Math.abs(d[m]) + Math.abs(d[m + 1]))) break;
      }
      if (m === l) break;
      if (iter >= 60) {
        throw new LinalgError(
          "no_convergence",
          `symmetricEigen: the QL iteration did not converge for eigenvalue ${l} of ${n} after 60 steps`,
        );
      }
      // Shift: the eigenvalue of the leading 2x2 of the block nearer to d[l].
      let g = (d[l + 1] - d[l]) / (2 * e[l]);
      let r = Math.hypot(g, 1);
      g = d[m] - d[l] + e[l] / (g + (g >= 0 ? r : -r));
      let s = 1, c = 1, p = 0;
      let underflow = false;
      for (let i = m - 1; i >= l; i--) {
        const f = s * e[i], b = c * e[i];
        r = Math.hypot(f, g);
        e[i + 1] = r;
        if (r === 0) {
          // The rotation underflowed: the block splits here; restart on the smaller one.
          d[i + 1] -= p;
          e[m] = 0;
          underflow = true;
          break;
        }
        s = f / r;
        c = g / r;
        g = d[i + 1] - p;
        r = (d[i] - g) * s + 2 * c * b;
        p = s * r;
        d[i + 1] = g + p;
        g = c * r - b;
        if (zt) rotateRows(zt, i * n, i * n + n, n, c, s);
      }
      if (underflow) continue;
      d[l] -= p;
      e[l] = g;
      e[m] = 0;
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// SVD

/** Thin singular value decomposition a = U diag(S) Vᵀ. */
export interface Svd {
  /** m x k, orthonormal columns. */
  u: Matrix;
  /** k singular values, descending (k = min(m, n)). */
  s: Float64Array;
  /** n x k, orthonormal columns. */
  v: Matrix;
}

/**
 * Thin SVD by one-sided Jacobi. For m >= n: the columns of B = A V₀, with V₀ the eigenvectors of AᵀA, are
 * rotated pairwise (and V₀ with them) until every pair is orthogonal to m·eps relative to the columns'
 * norms; then S = column norms and U = B / S. Pairs already orthogonal (checked in bulk with one Gram
 * matrix per sweep) cost nothing, which is what makes the preconditioning pay. m < n works on aᵀ.
 *
 * Columns of B with norm at most max(m, n)·eps·σ₁ are numerically zero (what is left of them is rounding
 * noise of the Gram step): they get σ = 0 and U columns that complete an orthonormal basis, instead of being
 * "orthogonalized" noise against noise. So a rank-r matrix costs about as much as a full-rank one, and every
 * singular value is accurate to max(m, n)·eps·σ₁ absolutely (larger ones to high relative accuracy).
 */
export function svd(a: Matrix): Svd {
  if (a.rows < a.cols) {
    const t = svd(transpose(a));
    return { u: t.v, s: t.s, v: t.u };
  }
  const m = a.rows, n = a.cols;
  if (!allFinite(a.data)) {
    throw new LinalgError("non_finite", `svd: the ${shape(a)} matrix has NaN or infinite entries`);
  }
  if (n === 0) return { u: zeros(m, 0), s: new Float64Array(0), v: zeros(0, 0) };
  // Scale to max |a| = 1 so that squares in the Gram matrix neither overflow nor underflow.
  const big = maxAbs(a.data);
  const as = big > 0 && big !== 1 ? scale(a, 1 / big) : a;
  const v = eigenRows(gram(as).data, n, true).rows!;
  const bt = abT(v, n, as.data, m, n, false); // row i = (A V₀) column i
  const norms = rowNorms(bt, n, m);
  const zeroTol = Math.max(...norms) * Math.max(m, n) * EPS;
  refineSmallColumns(bt, n, m, v, zeroTol);
  const active = Uint8Array.from(rowNorms(bt, n, m), (x) => x > zeroTol ? 1 : 0);
  jacobiOrthogonalize(bt, n, m, v, active);
  const after = rowNorms(bt, n, m);
  for (let i = 0; i < n; i++) if (!active[i] || !(after[i] > 1e-290)) after[i] = 0;
  const order = Array.from({ length: n }, (_, i) => i).sort((i, j) => after[j] - after[i]);
  const s = Float64Array.from(order, (i) => after[i] * big);
  const ut = new Float64Array(n * m); // rows = columns of U
  const vOut = zeros(n, n);
  const missing: number[] = [];
  order.forEach((src, c) => {
    const nrm = after[src];
    if (nrm > 0) axpy(ut, c * m, bt, src * m, m, 1 / nrm);
    else missing.push(c);
    for (let j = 0; j < n; j++) vOut.data[j * n + c] = v[src * n + j];
  });
  if (missing.length) completeRows(ut, n, m, missing);
  const u = { rows: m, cols: n, data: new Float64Array(m * n) };
  transposeInto(ut, n, m, u.data);
  return { u, s, v: vOut };
}

/** Columns below this fraction of the largest remaining one get a Gram preconditioning step of their own. */
const LEVEL = 1e-3;

/**
 * Multi-level preconditioning for graded matrices. Eigenvectors of AᵀA resolve directions only down to
 * about sqrt(eps)·σ₁, so columns of B = A V₀ much smaller than the largest are far from orthogonal among
 * themselves, which would cost Jacobi dozens of sweeps. So: the rows of `bt` (columns of B, roughly sorted
 * by norm) below LEVEL times the largest are rotated by the eigenvectors of their own Gram matrix, which is
 * accurate relative to *their* size; and again for the ones below LEVEL of those, and so on, down to the
 * rounding noise `zeroTol`. Jacobi then only polishes (typically one or two sweeps).
 */
function refineSmallColumns(bt: Float64Array, k: number, m: number, vt: Float64Array, zeroTol: number): void {
  const len = vt.length / k;
  let start = 0;
  for (let level = 0; level < 64; level++) {
    const norms = rowNorms(bt, k, m);
    let top = 0;
    for (let i = start; i < k; i++) top = Math.max(top, norms[i]);
    let split = start;
    while (split < k && norms[split] >= LEVEL * top) split++;
    if (split >= k - 1) return;
    let rest = 0;
    for (let i = split; i < k; i++) rest = Math.max(rest, norms[i]);
    if (rest <= zeroTol) return;
    const k2 = k - split;
    const block = bt.subarray(split * m, k * m), vblock = vt.subarray(split * len, k * len);
    const w = eigenRows(abT(block, k2, block, k2, m, true), k2, true).rows!;
    bt.set(abT(w, k2, transpose({ rows: k2, cols: m, data: block }).data, m, k2, false), split * m);
    vt.set(abT(w, k2, transpose({ rows: k2, cols: len, data: vblock }).data, len, k2, false), split * len);
    start = split;
  }
}

function rowNorms(d: Float64Array, rows: number, len: number): Float64Array {
  const out = new Float64Array(rows);
  for (let i = 0; i < rows; i++) out[i] = Math.sqrt(dot(d, i * len, d, i * len, len));
  return out;
}

/**
 * One-sided Jacobi on the active rows of `bt` ([k, m]): rotate pairs of rows (and the same rows of `vt`,
 * [k, len]) until all pairs are orthogonal to m·eps relative. Each sweep first computes all pairwise dot
 * products with the blocked kernel and skips pairs that were orthogonal and untouched since.
 */
function jacobiOrthogonalize(
  bt: Float64Array,
  k: number,
  m: number,
  vt: Float64Array,
  active: Uint8Array,
): void {
  const len = vt.length / k;
  const tol = Math.max(m, 4) * EPS;
  const touched = new Uint8Array(k);
  for (let sweep = 0; sweep < 60; sweep++) {
    const g = abT(bt, k, bt, k, m, true);
    touched.fill(0);
    let rotations = 0;
    for (let p = 0; p < k - 1; p++) {
      if (!active[p]) continue;
      for (let q = p + 1; q < k; q++) {
        if (!active[q]) continue;
        let alpha: number, beta: number, gamma: number;
        if (!touched[p] && !touched[q]) {
          alpha = g[p * k + p], beta = g[q * k + q], gamma = g[p * k + q];
          if (!(Math.abs(gamma) > tol * Math.sqrt(alpha * beta))) continue;
        }
        alpha = dot(bt, p * m, bt, p * m, m);
        beta = dot(bt, q * m, bt, q * m, m);
        gamma = dot(bt, p * m, bt, q * m, m);
        if (gamma === 0 || !(Math.abs(gamma) > tol * Math.sqrt(alpha * beta))) continue;
        // Rotation angle that zeroes the (p, q) dot product: t = tan θ, the root of t² + 2ζt - 1 = 0
        // of smaller magnitude.
        const zeta = (beta - alpha) / (2 * gamma);
        const t = (zeta >= 0 ? 1 : -1) / (Math.abs(zeta) + Math.hypot(1, zeta));
        const c = 1 / Math.sqrt(1 + t * t), s = c * t;
        rotateRows(bt, p * m, q * m, m, c, s);
        rotateRows(vt, p * len, q * len, len, c, s);
        touched[p] = 1;
        touched[q] = 1;
        rotations++;
      }
    }
    if (rotations === 0) return;
  }
  throw new LinalgError(
    "no_convergence",
    `svd: one-sided Jacobi did not converge in 60 sweeps (${k} columns)`,
  );
}

/** (x, y) <- (c x - s y, s x + c y) on two rows. */
function rotateRows(d: Float64Array, xo: number, yo: number, len: number, c: number, s: number): void {
  for (let t = 0; t < len; t++) {
    const x = d[xo + t], y = d[yo + t];
    d[xo + t] = c * x - s * y;
    d[yo + t] = s * x + c * y;
  }
}

/**
 * Fill the listed (zero) rows of `ut` ([k, m], orthonormal rows elsewhere) with unit vectors orthogonal to
 * all others: each starts from the unit vector e_j least covered by the rows so far (largest residual, at
 * least sqrt((m - filled) / m)) and is orthogonalized by Gram-Schmidt, twice.
 */
function completeRows(ut: Float64Array, k: number, m: number, missing: number[]): void {
  const isMissing = new Set(missing);
  const filled = Array.from({ length: k }, (_, c) => c).filter((c) => !isMissing.has(c));
  const cover = new Float64Array(m); // Σ over filled rows of row[j]², i.e. 1 - residual² of e_j
  const addCover = (c: number) => {
    for (let j = 0; j < m; j++) cover[j] += ut[c * m + j] ** 2;
  };
  filled.forEach(addCover);
  const x = new Float64Array(m);
  for (const c of missing) {
    let best = 0;
    for (let j = 1; j < m; j++) if (cover[j] < cover[best]) best = j;
    x.fill(0);
    x[best] = 1;
    for (let pass = 0; pass < 2; pass++) {
      for (const f of filled) axpy(x, 0, ut, f * m, m, -dot(x, 0, ut, f * m, m));
    }
    const nrm = Math.sqrt(dot(x, 0, x, 0, m));
    if (!(nrm > 0)) throw new LinalgError("no_convergence", "svd: could not complete the basis of U");
    axpy(ut, c * m, x, 0, m, 1 / nrm);
    filled.push(c);
    addCover(c);
  }
}

/** Rank-k factors of the best rank-k approximation (Eckart-Young): a ≈ up · down. */
export interface LowRankFactors {
  /** m x k = U_k diag(S_k). */
  up: Matrix;
  /** k x n = V_kᵀ. */
  down: Matrix;
  /** The k kept singular values, descending. */
  s: Float64Array;
}

/** The best rank-k approximation of a in Frobenius norm, as factors up (m x k) and down (k x n). */
export function lowRankApprox(a: Matrix, k: number): LowRankFactors {
  const kmax = Math.min(a.rows, a.cols);
  if (!Number.isInteger(k) || k < 1 || k > kmax) {
    throw new LinalgError(
      "shape",
      `lowRankApprox: rank must be an integer in [1, min(m, n) = ${kmax}] for a ${shape(a)} matrix, got ${k}`,
    );
  }
  const { u, s, v } = svd(a);
  const m = a.rows, n = a.cols, kk = u.cols;
  const up = zeros(m, k), down = zeros(k, n);
  for (let r = 0; r < m; r++) {
    for (let c = 0; c < k; c++) up.data[r * k + c] = u.data[r * kk + c] * s[c];
  }
  for (let c = 0; c < k; c++) {
    for (let j = 0; j < n; j++) down.data[c * n + j] = v.data[j * kk + c];
  }
  return { up, down, s: s.slice(0, k) };
}
