/**
 * Custom Diffusion's multi-concept merge (Kumari et al., CVPR 2023, "optimization-based merging"): N concepts
 * fine-tuned separately (each its own cross-attention K/V weights) become one set of weights per layer, the
 * closest to the base weights on ordinary text (regularization captions) among those that map every concept's
 * target words exactly as that concept's own weights do:
 *
 *   minimize ||(W - W0) Kᵀ||_F  subject to  W K_tᵀ = V_tᵀ
 *
 * with K [r, d] the text-encoder features of the regularization captions (all tokens), K_t [m, d] the stacked
 * features of every concept's target tokens, and V_t [m, out] row i = W_n k_i for the concept n that row i
 * belongs to. Closed form (C = KᵀK, D = K_t C⁻¹):
 *
 *   W = W0 + (V_tᵀ - W0 K_tᵀ) (D K_tᵀ)⁻¹ D
 *
 * Everything is float64 and goes through Cholesky solves, never an inverse. K and K_t are the same text
 * features for every layer, so C = KᵀK (the dominant cost: r·d² with r ≈ 15400, d = 768 on SD 1.5) and the
 * m x m matrix D K_tᵀ are factored once per merge, and the per-layer work is two thin products; C's factor
 * can be computed once with {@link factorRegularization} and reused across merges.
 *
 * @example
 * ```ts
 * const { weights, stats } = closedFormMerge({
 *   base,                                  // Map layer -> { data, out, inFeatures: 768 } (the base to_k/to_v)
 *   concepts: [
 *     { name: "cat", weights: catKV, targetFeatures: catFeats, targetRows: 8 },
 *     { name: "chair", weights: chairKV, targetFeatures: chairFeats, targetRows: 8 },
 *   ],
 *   regularizationFeatures: regFeats,      // [200 * 77, 768]
 *   regularizationRows: 200 * 77,
 *   featureDim: 768,
 * });                                      // weights: Map layer -> merged Float32Array [out, 768]
 * ```
 */
import {
  allFinite,
  cholesky,
  choleskyCondition,
  fromFloat32Transposed,
  gram,
  gramRows,
  LinalgError,
  matmul,
  matmulTransA,
  matmulTransB,
  type Matrix,
  matrix,
  solveCholesky,
  symmetricEigen,
  transpose,
} from "../linalg/dense.ts";

/** A base layer's weight, row-major [out, inFeatures]. */
export interface BaseLayer {
  data: Float32Array;
  out: number;
  inFeatures: number;
}

/** One separately fine-tuned concept. */
export interface MergeConcept {
  name: string;
  /** Fine-tuned weights by layer name, each [out, d] like the base layer; missing layers mean "base". */
  weights: Map<string, Float32Array>;
  /** Text-encoder features of the concept's target tokens, row-major [targetRows, d]. */
  targetFeatures: Float32Array;
  targetRows: number;
}

/** Cholesky factor of C = KᵀK for a set of regularization features, reusable across merges. */
export interface RegularizationFactor {
  featureDim: number;
  rows: number;
  /** Lower-triangular L with C = L Lᵀ. */
  chol: Matrix;
  /** (max L_ii / min L_ii)², an estimate of C's condition number. */
  condition: number;
  gramMs: number;
  factorMs: number;
}

export interface ClosedFormMergeOptions {
  /** Base weights by layer name (may hold more layers than the concepts touch). */
  base: Map<string, BaseLayer>;
  concepts: MergeConcept[];
  /** Text feature dimension d (768 for SD 1.5). */
  featureDim: number;
  /** Regularization text features [regularizationRows, d]; or give `regularization` instead. */
  regularizationFeatures?: Float32Array;
  regularizationRows?: number;
  /** A factor from {@link factorRegularization}, to skip recomputing C. */
  regularization?: RegularizationFactor;
  /** Relative pivot tolerance for both Cholesky factorizations (default 1e-12). */
  tol?: number;
  /** Also return the float64 merged weights (before rounding to float32). */
  float64?: boolean;
}

export interface MergeStats {
  /** Layers merged (those present in at least one concept). */
  layers: number;
  /** m, the number of target feature rows of all concepts. */
  targetRows: number;
  regularizationRows: number;
  /** Condition estimate of C = KᵀK. */
  conditionC: number;
  /** Condition estimate of the m x m matrix D K_tᵀ = K_t C⁻¹ K_tᵀ. */
  conditionTargets: number;
  /** Total wall time. */
  ms: number;
  /** Computing C = KᵀK (0 when a precomputed factor was given). */
  gramMs: number;
  /** Cholesky of C, D = K_t C⁻¹, the factor of D K_tᵀ and (D K_tᵀ)⁻¹ D. */
  factorMs: number;
  /** All per-layer work together. */
  layerMs: number;
}

export interface MergeResult {
  /** Merged weights, [out, d] row-major, for the merged layers only (the others stay as in `base`). */
  weights: Map<string, Float32Array>;
  /** The same in float64, when asked for with `float64: true`. */
  weights64?: Map<string, Matrix>;
  stats: MergeStats;
}

export type MergeErrorKind =
  | "shape"
  | "non_finite"
  | "no_concepts"
  | "regularization_rank"
  | "targets_dependent";

/** A merge that cannot be done as asked; `hint` says what to change. */
export class MergeError extends Error {
  readonly kind: MergeErrorKind;
  readonly hint: string;
  readonly layer?: string;
  override readonly cause?: LinalgError;

  constructor(
    kind: MergeErrorKind,
    message: string,
    hint: string,
    extra: { layer?: string; cause?: LinalgError } = {},
  ) {
    super(`${message}. ${hint}`);
    this.name = "MergeError";
    this.kind = kind;
    this.hint = hint;
    this.layer = extra.layer;
    this.cause = extra.cause;
  }
}

/**
 * Factor C = KᵀK of the regularization features (float32 [rows, featureDim]). Throws a MergeError
 * "regularization_rank" when C is singular or too ill-conditioned, with the numerical rank of the features.
 */
export function factorRegularization(
  features: Float32Array,
  rows: number,
  featureDim: number,
  options: { tol?: number } = {},
): RegularizationFactor {
  const d = featureDim;
  if (!Number.isInteger(d) || d < 1) {
    throw new MergeError(
      "shape",
      `featureDim must be a positive integer, got ${d}`,
      "Pass the text feature size.",
    );
  }
  if (!Number.isInteger(rows) || rows < 0 || features.length !== rows * d) {
    throw new MergeError(
      "shape",
      `regularization features: expected ${rows} rows x ${d} = ${rows * d} values, got ${features.length}`,
      "Pass the features row-major [rows, featureDim] with rows = captions x tokens.",
    );
  }
  if (!allFinite(features)) {
    throw new MergeError(
      "non_finite",
      "regularization features contain NaN or infinite values",
      "Recompute them.",
    );
  }
  if (rows < d) {
    throw new MergeError(
      "regularization_rank",
      `the regularization features have only ${rows} rows for ${d} feature dimensions, so C = KᵀK has rank ` +
        `at most ${rows} < ${d}`,
      "Add more, more varied regularization captions (Custom Diffusion uses 200 captions x 77 tokens).",
    );
  }
  const t0 = performance.now();
  const kt = fromFloat32Transposed(rows, d, features); // [d, rows]
  const c = gramRows(kt);
  const gramMs = performance.now() - t0;
  const t1 = performance.now();
  let chol: Matrix;
  try {
    chol = cholesky(c, { tol: options.tol, name: "C = KᵀK" });
  } catch (e) {
    if (!(e instanceof LinalgError)) throw e;
    const ev = symmetricEigen(c, { vectors: false }).values;
    const rank = ev.filter((x) => x > Math.max(options.tol ?? 1e-12, 4 * d * Number.EPSILON) * ev[0]).length;
    throw new MergeError(
      "regularization_rank",
      `the regularization captions give only rank ${rank} of ${d} features (C = KᵀK is ${
        e.kind.replace("_", "-")
      }: ${e.message})`,
      "Add more, more varied regularization captions, drop duplicated captions, and check that the " +
        "features are not mostly padding tokens.",
      { cause: e },
    );
  }
  return {
    featureDim: d,
    rows,
    chol,
    condition: choleskyCondition(chol),
    gramMs,
    factorMs: performance.now() - t1,
  };
}

/** Merge the concepts in closed form; see the module comment for the problem solved. */
export function closedFormMerge(o: ClosedFormMergeOptions): MergeResult {
  const t0 = performance.now();
  const d = o.featureDim;
  const layers = mergedLayers(o.concepts, o.base, d);
  const targets = stackTargets(o.concepts, d);
  const m = targets.features.rows;
  if (m > d) {
    throw new MergeError(
      "targets_dependent",
      `the concepts have ${m} target feature rows in total, more than the ${d} feature dimensions, so they ` +
        `cannot all be linearly independent`,
      "Use fewer target tokens per concept (e.g. only the modifier token and the category word).",
    );
  }
  let reg = o.regularization;
  if (reg) {
    if (reg.featureDim !== d) {
      throw new MergeError(
        "shape",
        `the regularization factor is for ${reg.featureDim}-dim features, expected ${d}`,
        "Factor the regularization features of the same text encoder.",
      );
    }
  } else {
    if (o.regularizationFeatures === undefined || o.regularizationRows === undefined) {
      throw new MergeError(
        "shape",
        "no regularization features",
        "Pass regularizationFeatures and regularizationRows, or a precomputed `regularization` factor.",
      );
    }
    reg = factorRegularization(o.regularizationFeatures, o.regularizationRows, d, { tol: o.tol });
  }
  const t1 = performance.now();
  // D = K_t C⁻¹ (from C X = K_tᵀ), then M = D K_tᵀ (symmetric positive definite when the targets are
  // independent) and G = M⁻¹ D, shared by every layer.
  const dMat = transpose(solveCholesky(reg.chol, transpose(targets.features)));
  const mMat = matmulTransB(dMat, targets.features);
  symmetrize(mMat);
  let lm: Matrix;
  try {
    lm = cholesky(mMat, { tol: o.tol, name: "D K_tᵀ" });
  } catch (e) {
    if (!(e instanceof LinalgError)) throw e;
    throw dependentTargets(e, targets.owners);
  }
  const g = solveCholesky(lm, dMat); // [m, d]
  const factorMs = (o.regularization ? 0 : reg.factorMs) + performance.now() - t1;

  const t2 = performance.now();
  const weights = new Map<string, Float32Array>();
  const weights64 = o.float64 ? new Map<string, Matrix>() : undefined;
  for (const [name, b] of layers) {
    // Eᵀ [m, out]: row i = (W_n - W0) k_i, the change concept n asks for on its own targets (zero for a
    // concept without the layer).
    const et = matrix(m, b.out);
    let row = 0;
    for (const c of o.concepts) {
      const wn = c.weights.get(name);
      if (wn) {
        const delta = matrix(b.out, d);
        for (let i = 0; i < delta.data.length; i++) delta.data[i] = wn[i] - b.data[i];
        const kn = matrix(c.targetRows, d, targets.features.data.subarray(row * d, (row + c.targetRows) * d));
        et.data.set(matmulTransB(kn, delta).data, row * b.out);
      }
      row += c.targetRows;
    }
    const w = matmulTransA(et, g); // ΔW = E M⁻¹ D, [out, d]
    const w32 = new Float32Array(w.data.length);
    for (let i = 0; i < w.data.length; i++) {
      w.data[i] += b.data[i];
      w32[i] = w.data[i];
    }
    weights.set(name, w32);
    weights64?.set(name, w);
  }
  const layerMs = performance.now() - t2;
  return {
    weights,
    weights64,
    stats: {
      layers: layers.size,
      targetRows: m,
      regularizationRows: reg.rows,
      conditionC: reg.condition,
      conditionTargets: choleskyCondition(lm),
      ms: performance.now() - t0,
      gramMs: o.regularization ? 0 : reg.gramMs,
      factorMs,
      layerMs,
    },
  };
}

/**
 * The baseline the paper compares with: the element-wise mean of the concepts' weights per layer (a concept
 * without the layer counts with the base weight). Only layers present in at least one concept.
 */
export function naiveAverage(
  concepts: MergeConcept[],
  base: Map<string, BaseLayer>,
): Map<string, Float32Array> {
  if (!concepts.length) {
    throw new MergeError("no_concepts", "no concepts to average", "Pass at least one concept.");
  }
  const out = new Map<string, Float32Array>();
  for (const [name, b] of mergedLayers(concepts, base, undefined)) {
    const sum = new Float64Array(b.data.length);
    for (const c of concepts) {
      const w = c.weights.get(name) ?? b.data;
      for (let i = 0; i < sum.length; i++) sum[i] += w[i];
    }
    out.set(name, Float32Array.from(sum, (x) => x / concepts.length));
  }
  return out;
}

/** The layers some concept has, in first-seen order, with their base weights; validates every shape. */
function mergedLayers(
  concepts: MergeConcept[],
  base: Map<string, BaseLayer>,
  featureDim: number | undefined,
): Map<string, BaseLayer> {
  if (!concepts.length) {
    throw new MergeError("no_concepts", "no concepts to merge", "Pass at least one concept.");
  }
  const layers = new Map<string, BaseLayer>();
  for (const c of concepts) {
    for (const [name, w] of c.weights) {
      const b = base.get(name);
      if (!b) {
        throw new MergeError(
          "shape",
          `concept "${c.name}" has layer "${name}", which the base weights do not have`,
          "Pass the base model's weights for every fine-tuned layer (same layer names).",
          { layer: name },
        );
      }
      if (!layers.has(name)) {
        if (b.data.length !== b.out * b.inFeatures) {
          throw new MergeError(
            "shape",
            `base layer "${name}": expected [${b.out}, ${b.inFeatures}] = ${
              b.out * b.inFeatures
            } values, got ` +
              `${b.data.length}`,
            "Check the base weights' shapes.",
            { layer: name },
          );
        }
        if (featureDim !== undefined && b.inFeatures !== featureDim) {
          throw new MergeError(
            "shape",
            `base layer "${name}" takes ${b.inFeatures} input features, expected the text feature dim ${featureDim}`,
            "Only cross-attention to_k/to_v layers (whose input is the text features) can be merged.",
            { layer: name },
          );
        }
        layers.set(name, b);
      }
      if (w.length !== b.data.length) {
        throw new MergeError(
          "shape",
          `concept "${c.name}" layer "${name}": expected [${b.out}, ${b.inFeatures}] = ${b.data.length} values ` +
            `like the base, got ${w.length}`,
          "All concepts must be fine-tuned from the same base model.",
          { layer: name },
        );
      }
      if (featureDim !== undefined && !allFinite(w)) {
        throw new MergeError(
          "non_finite",
          `concept "${c.name}" layer "${name}" has NaN or infinite weights`,
          "Drop or retrain this concept.",
          { layer: name },
        );
      }
    }
  }
  return layers;
}

/** All concepts' target features stacked [m, d] (float64), with the owner of each row. */
function stackTargets(
  concepts: MergeConcept[],
  d: number,
): { features: Matrix; owners: { concept: string; row: number }[] } {
  if (!Number.isInteger(d) || d < 1) {
    throw new MergeError(
      "shape",
      `featureDim must be a positive integer, got ${d}`,
      "Pass the text feature size.",
    );
  }
  const owners: { concept: string; row: number }[] = [];
  for (const c of concepts) {
    if (!Number.isInteger(c.targetRows) || c.targetRows < 1) {
      throw new MergeError(
        "shape",
        `concept "${c.name}": targetRows must be a positive integer, got ${c.targetRows}`,
        "Give each concept the features of at least one target token.",
      );
    }
    if (c.targetFeatures.length !== c.targetRows * d) {
      throw new MergeError(
        "shape",
        `concept "${c.name}": target features should be [${c.targetRows}, ${d}] = ${
          c.targetRows * d
        } values, ` +
          `got ${c.targetFeatures.length}`,
        "Pass the text-encoder features of the target tokens row-major, one row per token.",
      );
    }
    if (!allFinite(c.targetFeatures)) {
      throw new MergeError(
        "non_finite",
        `concept "${c.name}": target features contain NaN or infinite values`,
        "Recompute them.",
      );
    }
    for (let r = 0; r < c.targetRows; r++) owners.push({ concept: c.name, row: r });
  }
  const features = matrix(owners.length, d);
  let off = 0;
  for (const c of concepts) {
    for (let i = 0; i < c.targetFeatures.length; i++) features.data[off + i] = c.targetFeatures[i];
    off += c.targetFeatures.length;
  }
  return { features, owners };
}

function symmetrize(a: Matrix): void {
  const n = a.rows;
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      const v = 0.5 * (a.data[i * n + j] + a.data[j * n + i]);
      a.data[i * n + j] = v;
      a.data[j * n + i] = v;
    }
  }
}

function dependentTargets(e: LinalgError, owners: { concept: string; row: number }[]): MergeError {
  const at = e.pivotIndex !== undefined ? owners[e.pivotIndex] : undefined;
  const which = at
    ? `target row ${at.row} of concept "${at.concept}" is (nearly) a combination of the target rows before it`
    : "the target features are (nearly) linearly dependent";
  return new MergeError(
    "targets_dependent",
    `the target features are linearly dependent: ${which} (D K_tᵀ is ${e.kind.replace("_", "-")}, ` +
      `condition ~${(e.conditionEstimate ?? Infinity).toExponential(1)})`,
    "Two concepts have (nearly) the same target words/features; give each concept distinct target prompts, " +
      "or drop duplicates.",
    { cause: e },
  );
}

export interface SoftMergeOptions {
  base: Map<string, BaseLayer>;
  /** Each concept's target features may be many rows (e.g. every position from its modifier token on). */
  concepts: MergeConcept[];
  featureDim: number;
  regularization: RegularizationFactor;
  /**
   * Weight of the concepts' rows against the regularization rows, per row: the penalty is
   * `lambda x (regularization rows / target rows)` (default 100: each target row weighs a hundred times an
   * average regularization row).
   */
  lambda?: number;
  tol?: number;
}

/**
 * The same objective with the constraints as a strong penalty, for target rows that outnumber (or nearly
 * repeat) the feature dimensions, e.g. every position of a concept's prompts from its modifier token on,
 * padding included (the positions the UNet's cross-attention also reads):
 *
 *   minimize ||(W - W0) Kᵀ||² + μ Σ_n ||(W - W_n) K_{t,n}ᵀ||²,  μ = lambda · rows(K) / rows(K_t)
 *   W = (W0 C + μ Σ_n W_n T_n)(C + μ Σ_n T_n)⁻¹,  C = KᵀK, T_n = K_{t,n}ᵀ K_{t,n}
 *
 * one Cholesky of the d x d matrix C + μ T for all layers. As μ grows it tends to the exact solution on the
 * span of the target rows.
 */
export function softConstrainedMerge(o: SoftMergeOptions): MergeResult {
  const t0 = performance.now();
  const d = o.featureDim;
  const layers = mergedLayers(o.concepts, o.base, d);
  const targets = stackTargets(o.concepts, d);
  if (o.regularization.featureDim !== d) {
    throw new MergeError(
      "shape",
      `the regularization factor is for ${o.regularization.featureDim}-dim features, expected ${d}`,
      "Factor the regularization features of the same text encoder.",
    );
  }
  const lambda = o.lambda ?? 100;
  if (!(lambda > 0 && Number.isFinite(lambda))) {
    throw new MergeError("shape", `lambda must be a positive number, got ${lambda}`, "Use e.g. 100.");
  }
  const mu = lambda * o.regularization.rows / targets.features.rows;
  const c = matmulTransB(o.regularization.chol, o.regularization.chol); // C = L Lᵀ
  const t1 = performance.now();
  // W (C + μT) = W0 C + μ Σ W_n T_n  <=>  W = W0 + μ Σ_n ((W_n - W0) K_nᵀ) (K_n (C + μT)⁻¹): T_n = K_nᵀ K_n has
  // rank at most rows(K_n), so each layer costs two thin products per concept; H_n = K_n (C + μT)⁻¹ is shared.
  const kn: Matrix[] = [];
  let row = 0;
  const sys = matrix(d, d, Float64Array.from(c.data));
  for (const concept of o.concepts) {
    const k = matrix(
      concept.targetRows,
      d,
      targets.features.data.subarray(row * d, (row + concept.targetRows) * d),
    );
    row += concept.targetRows;
    const tn = gram(k);
    for (let i = 0; i < sys.data.length; i++) sys.data[i] += mu * tn.data[i];
    kn.push(k);
  }
  symmetrize(sys);
  let l: Matrix;
  try {
    l = cholesky(sys, { tol: o.tol, name: "C + μT" });
  } catch (e) {
    if (!(e instanceof LinalgError)) throw e;
    throw new MergeError(
      "regularization_rank",
      `C + μT is not positive definite (${e.message})`,
      "Add more, more varied regularization captions.",
      { cause: e },
    );
  }
  const h = kn.map((k) => transpose(solveCholesky(l, transpose(k)))); // (C + μT)⁻¹ symmetric
  const factorMs = performance.now() - t1;
  const t2 = performance.now();
  const weights = new Map<string, Float32Array>();
  for (const [name, b] of layers) {
    const w = Float64Array.from(b.data);
    o.concepts.forEach((concept, n) => {
      const wn = concept.weights.get(name);
      if (!wn) return; // this concept keeps the base weight here: no change asked
      const delta = matrix(b.out, d);
      for (let i = 0; i < delta.data.length; i++) delta.data[i] = wn[i] - b.data[i];
      const p = matmul(matmulTransB(delta, kn[n]), h[n]); // [out, d]
      for (let i = 0; i < w.length; i++) w[i] += mu * p.data[i];
    });
    weights.set(name, Float32Array.from(w));
  }
  return {
    weights,
    stats: {
      layers: layers.size,
      targetRows: targets.features.rows,
      regularizationRows: o.regularization.rows,
      conditionC: o.regularization.condition,
      conditionTargets: choleskyCondition(l),
      ms: performance.now() - t0,
      gramMs: 0,
      factorMs,
      layerMs: performance.now() - t2,
    },
  };
}
