/**
 * Finite-difference checks of the autodiff: builds a graph, appends `loss = sum(output * R)` for a fixed
 * random R (so every output element matters) and its backward pass, runs it once for the analytic gradients,
 * then compares them with central differences of the same loss computed by a forward-only session.
 *
 * ONNX Runtime computes in float32, so the differences are taken with care: steps are powers of two scaled to
 * each input's magnitude, the loss is accumulated on the host in float64 from the output tensor (never summed
 * in float32), and the default stencil is the five-point one (error O(h^4)), so the step can be large enough
 * for float32 round-off to stay small. Two kinds of check run:
 *
 * - directional: d/dt loss(x + t v) against <grad, v> for random directions v with N(0, 1) entries, per input.
 *   Cheap (four runs per direction whatever the input's size) and robust; its error is normalized by
 *   max(||grad||, |numeric|) (||grad|| is the typical size of <grad, v>), so a direction nearly orthogonal to
 *   the gradient does not blow it up;
 * - coordinates: every coordinate of small inputs, a random subset of large ones; a coordinate passes when
 *   |a - n| <= atol + rtol |n| with atol = atolScale * rms(grad) (the input's typical gradient).
 *
 * @example
 * ```ts
 * const r = await gradcheck({
 *   build: (g) => {
 *     const x = g.input("x", "float32", [3]);
 *     return { inputs: [x], output: g.op("Tanh", [x]) };
 *   },
 *   feeds: { x: Tensor.f32([3], [0.1, -0.4, 0.7]) },
 * });
 * r.worst; // largest relative error seen
 * ```
 */
import { GraphBuilder, type Value } from "./builder.ts";
import { appendBackward } from "./autodiff.ts";
import { OrtSession } from "../ort/session.ts";
import { Rng } from "../random.ts";
import { Tensor } from "../tensor.ts";

export interface GradcheckOptions {
  /** Label for messages. */
  name?: string;
  /**
   * Builds the graph on `g` (declare inputs with `g.input`); returns the float inputs to differentiate and the
   * output whose weighted sum is the loss. Called once.
   */
  build: (g: GraphBuilder) => { inputs: Value[]; output: Value };
  /**
   * A tensor for every graph input (checked inputs and others, e.g. indices); a function is called after
   * `build`, for graphs whose inputs are known only once built (e.g. LoRA slots).
   */
  feeds: Record<string, Tensor> | (() => Record<string, Tensor>);
  /**
   * Relative step: h = eps * max(rms(x), minScale), rounded down to a power of two (default 2^-7, about 8e-3);
   * directional differences use h / n^(1/4) for an input of n elements. A number for all inputs, or per input
   * name. Deep graphs want larger steps (float32 round-off on the loss grows with depth).
   */
  eps?: number | Record<string, number>;
  /** Floor of the magnitude the step is scaled to (default 0.1). */
  minScale?: number;
  /** 2: (f(x+h) - f(x-h)) / 2h; 4 (default): the five-point stencil. */
  stencil?: 2 | 4;
  /** Random directions per input (default 3). */
  directions?: number;
  /** Coordinates per input: all when the input has at most this many elements, else a random subset (24). */
  coordinates?: number;
  /** Per-coordinate relative tolerance (default 1e-2). */
  rtol?: number;
  /** Per-coordinate absolute tolerance, as a fraction of rms(grad) of that input (default 1e-2). */
  atolScale?: number;
  /** Bound on the normalized directional error (default 1e-2). */
  dirTol?: number;
  /** Seed of R, of the directions and of the coordinate subset (default 0). */
  seed?: number;
  /** Reject with a GradcheckError listing the failing checks, worst first (default true). */
  throwOnFailure?: boolean;
}

/** One compared quantity. */
export interface GradcheckEntry {
  input: string;
  /** "direction k", a coordinate's multi-index, or "vector of k coordinates". */
  what: string;
  analytic: number;
  numeric: number;
  /** |analytic - numeric| / the scale it is judged against. */
  error: number;
  ok: boolean;
}

export interface GradcheckInputReport {
  input: string;
  size: number;
  /** Steps of the coordinate and of the directional differences. */
  step: number;
  directionalStep: number;
  gradRms: number;
  /** Largest normalized directional error. */
  directional: number;
  /** Largest per-coordinate relative error |a - n| / max(|n|, rms(grad)). */
  coordinate: number;
  /** ||a - n|| / max(||n||, rms(grad) sqrt(k)) over the k checked coordinates. */
  vector: number;
  coordinatesChecked: number;
}

export interface GradcheckResult {
  ok: boolean;
  /** Largest error of any check (directional, coordinate or vector). */
  worst: number;
  inputs: GradcheckInputReport[];
  /** The analytic gradients, by input name. */
  gradients: Record<string, Tensor>;
  /** Op types of the forward graph (to confirm a case exercises the op it is meant to). */
  forwardOps: Set<string>;
  /** Nodes the backward pass added, and their op types. */
  backwardNodes: number;
  backwardOps: Set<string>;
  /** Every compared quantity: failures first, then by decreasing error. */
  entries: GradcheckEntry[];
  /** A multi-line summary: per input, then the failures (or the three worst entries when all pass). */
  report: string;
}

function rms(x: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i] * x[i];
  return x.length ? Math.sqrt(s / x.length) : 0;
}

/** Largest power of two <= x. */
function pow2Floor(x: number): number {
  return 2 ** Math.floor(Math.log2(x));
}

function multiIndex(flat: number, dims: readonly number[]): number[] {
  const idx = new Array(dims.length).fill(0);
  for (let i = dims.length - 1; i >= 0; i--) {
    idx[i] = flat % dims[i];
    flat = Math.floor(flat / dims[i]);
  }
  return idx;
}

/** k distinct integers of [0, n), sorted (all of them when k >= n). */
function sampleIndices(rng: Rng, n: number, k: number): number[] {
  if (k >= n) return [...Array(n).keys()];
  const all = [...Array(n).keys()];
  for (let i = 0; i < k; i++) {
    const j = i + rng.int(n - i);
    [all[i], all[j]] = [all[j], all[i]];
  }
  return all.slice(0, k).sort((a, b) => a - b);
}

/**
 * Checks the backward pass of the graph `build` makes against central finite differences; see the module
 * comment. Resolves to the result (and, by default, rejects with the worst entries when a check fails).
 */
export async function gradcheck(opts: GradcheckOptions): Promise<GradcheckResult> {
  const label = opts.name ?? "gradcheck";
  const stencil = opts.stencil ?? 4;
  const nDir = opts.directions ?? 3;
  const maxCoords = opts.coordinates ?? 24;
  const rtol = opts.rtol ?? 1e-2;
  const atolScale = opts.atolScale ?? 1e-2;
  const dirTol = opts.dirTol ?? 1e-2;
  const minScale = opts.minScale ?? 0.1;
  const rng = new Rng(opts.seed ?? 0);

  // One graph: the forward part is serialized first, then the loss and backward pass are appended.
  const g = new GraphBuilder(label.replace(/[^A-Za-z0-9_]/g, "_"));
  const { inputs, output } = opts.build(g);
  const feeds = typeof opts.feeds === "function" ? opts.feeds() : opts.feeds;
  if (!inputs.length) throw new Error(`${label}: no inputs to check`);
  for (const x of inputs) {
    if (x.dtype !== "float32") throw new Error(`${label}: input "${x.name}" is ${x.dtype}, not float32`);
    if (!feeds[x.name]) throw new Error(`${label}: no feed for input "${x.name}"`);
  }
  const forwardOps = new Set(g.graphNodes.map((n) => n.opType));
  const fwdOut = g.output(output, "gradcheck.output");
  const fwdInputs = g.inputs.map((i) => ({ ...i, shape: [...i.shape] }));
  const fwdBytes = g.toBytes();

  // R takes the output's inferred shape (fresh symbols where unknown) so shape inference is not perturbed.
  const fwd = await OrtSession.create(fwdBytes, { inputs: fwdInputs }, "cpu");
  try {
    const base = (await fwd.run(feeds))[fwdOut.name];
    const outDims = base.dims;
    const R = rng.normal(base.size);
    const inferred = g.shapeOf(output);
    const rShape = inferred && inferred.length === outDims.length
      ? inferred.map((d, i) => (typeof d === "number" ? d : typeof d === "string" ? d : `gradcheck_r${i}`))
      : outDims;
    const r = g.input("gradcheck.R", "float32", rShape);
    const loss = g.op("ReduceSum", [g.op("Mul", [output, r])], { keepdims: 0 });
    const before = g.nodeCount;
    const grads = appendBackward(g, loss, inputs);
    const backwardNodes = g.nodeCount - before;
    const backwardOps = new Set(g.graphNodes.slice(before).map((n) => n.opType));
    grads.forEach((v, i) => g.output(v, `gradcheck.grad.${i}`));
    const bwd = await OrtSession.create(g.toBytes(), { inputs: g.inputs }, "cpu");
    let analytic: Record<string, Tensor>;
    try {
      analytic = await bwd.run({ ...feeds, "gradcheck.R": Tensor.f32(outDims, R) });
    } finally {
      await bwd.release();
    }
    const gradients: Record<string, Tensor> = {};
    inputs.forEach((x, i) => {
      const t = analytic[`gradcheck.grad.${i}`];
      const want = feeds[x.name].dims;
      if (t.dims.join() !== want.join()) {
        throw new Error(
          `${label}: gradient of "${x.name}" has shape [${t.dims.join(", ")}], input has [${
            want.join(", ")
          }]`,
        );
      }
      gradients[x.name] = t;
    });

    // The loss, accumulated in float64, of the forward output for perturbed feeds.
    const lossOf = async (name: string, data: Float32Array): Promise<number> => {
      const perturbed = { ...feeds, [name]: new Tensor("float32", feeds[name].dims, data) };
      const y = (await fwd.run(perturbed))[fwdOut.name].f;
      let s = 0;
      for (let i = 0; i < y.length; i++) s += y[i] * R[i];
      return s;
    };
    // d/dt loss(x + t v) at 0, with v given by `perturb(t)` (the perturbed data).
    const derivative = async (name: string, perturb: (t: number) => Float32Array, h: number) => {
      if (stencil === 2) {
        return ((await lossOf(name, perturb(h))) - (await lossOf(name, perturb(-h)))) / (2 * h);
      }
      const [p1, m1, p2, m2] = [
        await lossOf(name, perturb(h)),
        await lossOf(name, perturb(-h)),
        await lossOf(name, perturb(2 * h)),
        await lossOf(name, perturb(-2 * h)),
      ];
      return (8 * (p1 - m1) - (p2 - m2)) / (12 * h);
    };

    const reports: GradcheckInputReport[] = [];
    const entries: GradcheckEntry[] = [];
    for (const x of inputs) {
      const feed = feeds[x.name];
      const x0 = feed.f;
      const ga = gradients[x.name].f;
      const n = x0.length;
      const epsX = typeof opts.eps === "number" ? opts.eps : opts.eps?.[x.name] ?? 2 ** -7;
      const h = pow2Floor(epsX * Math.max(rms(x0), minScale));
      const gRms = rms(ga);
      const gNorm = gRms * Math.sqrt(n);

      // Directional checks: v with unit-variance entries, so <g, v> is typically ||g||. Moving every element
      // at once is more non-linear than moving one, and the derivative is larger: the step shrinks by n^(1/4),
      // between per-element (1) and per-norm (sqrt n) scaling.
      const hDir = pow2Floor(h / Math.sqrt(Math.sqrt(n)));
      let dirWorst = 0;
      for (let k = 0; k < nDir; k++) {
        const v = rng.normal(n);
        let a = 0;
        for (let i = 0; i < n; i++) a += ga[i] * v[i];
        const num = await derivative(x.name, (t) => {
          const d = new Float32Array(n);
          for (let i = 0; i < n; i++) d[i] = x0[i] + t * v[i];
          return d;
        }, hDir);
        const err = Math.abs(a - num) / Math.max(gNorm, Math.abs(num), 1e-30);
        dirWorst = Math.max(dirWorst, err);
        entries.push({
          input: x.name,
          what: `direction ${k}`,
          analytic: a,
          numeric: num,
          error: err,
          ok: err <= dirTol,
        });
      }

      // Coordinates.
      const coords = sampleIndices(rng, n, maxCoords);
      let coordWorst = 0, diff2 = 0, num2 = 0;
      for (const c of coords) {
        const num = await derivative(x.name, (t) => {
          const d = Float32Array.from(x0);
          d[c] = x0[c] + t;
          return d;
        }, h);
        const a = ga[c];
        const ok = Math.abs(a - num) <= atolScale * gRms + rtol * Math.abs(num);
        const err = Math.abs(a - num) / Math.max(Math.abs(num), gRms, 1e-30);
        coordWorst = Math.max(coordWorst, err);
        diff2 += (a - num) ** 2;
        num2 += num * num;
        entries.push({
          input: x.name,
          what: `[${multiIndex(c, feed.dims).join(", ")}]`,
          analytic: a,
          numeric: num,
          error: err,
          ok,
        });
      }
      const vector = Math.sqrt(diff2) / Math.max(Math.sqrt(num2), gRms * Math.sqrt(coords.length), 1e-30);
      if (!(vector <= rtol)) {
        entries.push({
          input: x.name,
          what: `vector of ${coords.length} coordinates`,
          analytic: NaN,
          numeric: NaN,
          error: vector,
          ok: false,
        });
      }
      reports.push({
        input: x.name,
        size: n,
        step: h,
        directionalStep: hDir,
        gradRms: gRms,
        directional: dirWorst,
        coordinate: coordWorst,
        vector,
        coordinatesChecked: coords.length,
      });
    }
    entries.sort((a, b) => Number(a.ok) - Number(b.ok) || b.error - a.error);
    const ok = entries.every((e) => e.ok) && entries.every((e) => Number.isFinite(e.error));
    const worst = Math.max(0, ...reports.map((r) => Math.max(r.directional, r.coordinate, r.vector)));
    const shown = ok ? entries.slice(0, 3) : entries.filter((e) => !e.ok).slice(0, 10);
    const lines = [
      `${label}: ${ok ? "ok" : "FAILED"} (worst ${worst.toExponential(2)})`,
      ...reports.map((r) =>
        `  ${r.input} (${r.size} elements, h=${r.step}/${r.directionalStep}, rms(grad)=${
          r.gradRms.toExponential(2)
        }): ` +
        `directional ${r.directional.toExponential(2)}, coordinates ${r.coordinate.toExponential(2)} ` +
        `(vector ${r.vector.toExponential(2)}, ${r.coordinatesChecked} checked)`
      ),
      ...shown.map((e) =>
        `  ${e.ok ? "" : "FAIL "}${e.input} ${e.what}: analytic ${e.analytic.toPrecision(6)}, numeric ${
          e.numeric.toPrecision(6)
        }, error ${e.error.toExponential(2)}`
      ),
    ];
    const report = lines.join("\n");
    if (!ok && (opts.throwOnFailure ?? true)) throw new GradcheckError(report);
    return { ok, worst, inputs: reports, gradients, forwardOps, backwardNodes, backwardOps, entries, report };
  } finally {
    await fwd.release();
  }
}

/** A failed gradient check; the message lists the worst coordinates. */
export class GradcheckError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "GradcheckError";
  }
}
