/**
 * Plain-TypeScript reference implementations of the layers in `ops.ts`, written from the math (loops over
 * typed arrays, float64 accumulation) and never from ONNX ops, so that `ops_test.ts` checks the graphs
 * against something independent. Layouts and semantics follow PyTorch: images NCHW, conv weights
 * [out, in/groups, kh, kw], linear weights [out, in].
 *
 * These are for tests on tiny shapes: they are slow and allocate freely.
 *
 * @example
 * ```ts
 * const x = { data: new Float32Array([1, 2, 3, 4]), shape: [1, 1, 2, 2] };
 * const w = { data: new Float32Array([1]), shape: [1, 1, 1, 1] };
 * conv2d(x, w, [0.5]).data; // Float64Array [1.5, 2.5, 3.5, 4.5]
 * ```
 */

/** An input array with its shape (row-major). A `Tensor` fits (use `{ data: t.f, shape: t.dims }`). */
export interface RefInput {
  readonly data: ArrayLike<number>;
  readonly shape: readonly number[];
}

/** A reference result: float64 data with its shape. */
export interface RefTensor {
  data: Float64Array;
  shape: number[];
}

/** Number of elements of a shape. */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Row-major strides of a shape. */
export function strides(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

function checkSize(x: RefInput, what: string): void {
  if (x.data.length !== numel(x.shape)) {
    throw new RangeError(`${what}: ${x.data.length} elements for shape [${x.shape.join(", ")}]`);
  }
}

export interface RefConv2dOptions {
  stride?: number;
  /** Symmetric padding, or [top, left, bottom, right] (zero padding). */
  padding?: number | readonly [number, number, number, number];
  groups?: number;
}

/**
 * 2-D cross-correlation as torch.nn.functional.conv2d: x [N, C, H, W], weight [O, C/groups, kh, kw], optional
 * bias [O]; zero padding (possibly asymmetric), square stride, grouped channels.
 * Output [N, O, floor((H + pt + pb - kh) / s) + 1, floor((W + pl + pr - kw) / s) + 1].
 */
export function conv2d(
  x: RefInput,
  weight: RefInput,
  bias?: ArrayLike<number> | null,
  opts: RefConv2dOptions = {},
): RefTensor {
  checkSize(x, "conv2d x");
  checkSize(weight, "conv2d weight");
  const [n, c, h, w] = x.shape;
  const [o, cg, kh, kw] = weight.shape;
  const s = opts.stride ?? 1;
  const groups = opts.groups ?? 1;
  const p = opts.padding ?? 0;
  const [pt, pl, pb, pr] = typeof p === "number" ? [p, p, p, p] : p;
  if (c !== cg * groups) {
    throw new RangeError(`conv2d: ${c} input channels, weight expects ${cg} x ${groups} groups`);
  }
  if (o % groups !== 0) {
    throw new RangeError(`conv2d: ${o} output channels not divisible by ${groups} groups`);
  }
  const oh = Math.floor((h + pt + pb - kh) / s) + 1;
  const ow = Math.floor((w + pl + pr - kw) / s) + 1;
  const og = o / groups;
  const out = new Float64Array(n * o * oh * ow);
  for (let b = 0; b < n; b++) {
    for (let oc = 0; oc < o; oc++) {
      const g = Math.floor(oc / og);
      for (let oy = 0; oy < oh; oy++) {
        for (let ox = 0; ox < ow; ox++) {
          let acc = bias ? bias[oc] : 0;
          for (let ic = 0; ic < cg; ic++) {
            const xc = g * cg + ic;
            for (let ky = 0; ky < kh; ky++) {
              const iy = oy * s + ky - pt;
              if (iy < 0 || iy >= h) continue;
              for (let kx = 0; kx < kw; kx++) {
                const ix = ox * s + kx - pl;
                if (ix < 0 || ix >= w) continue;
                acc += x.data[((b * c + xc) * h + iy) * w + ix] *
                  weight.data[((oc * cg + ic) * kh + ky) * kw + kx];
              }
            }
          }
          out[((b * o + oc) * oh + oy) * ow + ox] = acc;
        }
      }
    }
  }
  return { data: out, shape: [n, o, oh, ow] };
}

/** torch.nn.functional.linear: x [..., in], weight [out, in], optional bias [out] -> [..., out]. */
export function linear(x: RefInput, weight: RefInput, bias?: ArrayLike<number> | null): RefTensor {
  checkSize(x, "linear x");
  checkSize(weight, "linear weight");
  const [o, k] = weight.shape;
  if (x.shape[x.shape.length - 1] !== k) {
    throw new RangeError(`linear: x has ${x.shape.at(-1)} features, weight ${k}`);
  }
  const rows = x.data.length / k;
  const out = new Float64Array(rows * o);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < o; j++) {
      let acc = bias ? bias[j] : 0;
      for (let i = 0; i < k; i++) acc += x.data[r * k + i] * weight.data[j * k + i];
      out[r * o + j] = acc;
    }
  }
  return { data: out, shape: [...x.shape.slice(0, -1), o] };
}

/**
 * torch.nn.GroupNorm(groups, C, eps, affine=True) on x [N, C, ...]: each (sample, group) of C/groups channels
 * and all spatial positions is normalized with its mean and biased variance, then each channel is scaled
 * by gamma[c] and shifted by beta[c].
 */
export function groupNorm(
  x: RefInput,
  gamma: ArrayLike<number>,
  beta: ArrayLike<number>,
  groups: number,
  eps: number,
): RefTensor {
  checkSize(x, "groupNorm x");
  const [n, c] = x.shape;
  if (c % groups !== 0) throw new RangeError(`groupNorm: ${c} channels not divisible by ${groups} groups`);
  const spatial = numel(x.shape.slice(2));
  const cg = c / groups;
  const len = cg * spatial;
  const out = new Float64Array(x.data.length);
  for (let b = 0; b < n; b++) {
    for (let g = 0; g < groups; g++) {
      const base = (b * c + g * cg) * spatial;
      let mean = 0;
      for (let i = 0; i < len; i++) mean += x.data[base + i];
      mean /= len;
      let variance = 0;
      for (let i = 0; i < len; i++) variance += (x.data[base + i] - mean) ** 2;
      variance /= len;
      const inv = 1 / Math.sqrt(variance + eps);
      for (let i = 0; i < len; i++) {
        const ch = g * cg + Math.floor(i / spatial);
        out[base + i] = (x.data[base + i] - mean) * inv * gamma[ch] + beta[ch];
      }
    }
  }
  return { data: out, shape: [...x.shape] };
}

/** torch.nn.LayerNorm(D, eps) over the last axis (biased variance), with gamma [D] and beta [D]. */
export function layerNorm(
  x: RefInput,
  gamma: ArrayLike<number>,
  beta: ArrayLike<number>,
  eps: number,
): RefTensor {
  checkSize(x, "layerNorm x");
  const d = x.shape[x.shape.length - 1];
  const rows = x.data.length / d;
  const out = new Float64Array(x.data.length);
  for (let r = 0; r < rows; r++) {
    let mean = 0;
    for (let i = 0; i < d; i++) mean += x.data[r * d + i];
    mean /= d;
    let variance = 0;
    for (let i = 0; i < d; i++) variance += (x.data[r * d + i] - mean) ** 2;
    variance /= d;
    const inv = 1 / Math.sqrt(variance + eps);
    for (let i = 0; i < d; i++) out[r * d + i] = (x.data[r * d + i] - mean) * inv * gamma[i] + beta[i];
  }
  return { data: out, shape: [...x.shape] };
}

/**
 * Softmax over the last axis, max-subtracted. Entries of -Infinity get probability 0; a row that is all
 * -Infinity gives NaN, as in PyTorch.
 */
export function softmax(x: RefInput): RefTensor {
  checkSize(x, "softmax x");
  const d = x.shape[x.shape.length - 1];
  const rows = x.data.length / d;
  const out = new Float64Array(x.data.length);
  for (let r = 0; r < rows; r++) {
    let max = -Infinity;
    for (let i = 0; i < d; i++) max = Math.max(max, x.data[r * d + i]);
    let sum = 0;
    for (let i = 0; i < d; i++) {
      const e = Math.exp(x.data[r * d + i] - max);
      out[r * d + i] = e;
      sum += e;
    }
    for (let i = 0; i < d; i++) out[r * d + i] /= sum;
  }
  return { data: out, shape: [...x.shape] };
}

/** The flat index into `shape` (right-aligned, size-1 dims broadcast) of the element at `idx` of a bigger shape. */
function broadcastOffset(shape: readonly number[], st: readonly number[], idx: readonly number[]): number {
  let off = 0;
  const lead = idx.length - shape.length;
  for (let i = 0; i < shape.length; i++) {
    if (shape[i] !== 1) off += idx[lead + i] * st[i];
  }
  return off;
}

/**
 * Multi-head scaled dot-product attention as torch.nn.functional.scaled_dot_product_attention on heads split
 * from the feature axis: q [B, Lq, H*D], k and v [B, Lk, H*D] -> [B, Lq, H*D], with logits
 * q.k / sqrt(D) plus an optional additive `mask` broadcastable (right-aligned) to [B, H, Lq, Lk].
 */
export function attention(
  q: RefInput,
  k: RefInput,
  v: RefInput,
  heads: number,
  mask?: RefInput | null,
): RefTensor {
  checkSize(q, "attention q");
  checkSize(k, "attention k");
  checkSize(v, "attention v");
  const [b, lq, hd] = q.shape;
  const lk = k.shape[1];
  if (hd % heads !== 0) throw new RangeError(`attention: ${hd} features not divisible by ${heads} heads`);
  if (k.shape[2] !== hd || v.shape[2] !== hd || v.shape[1] !== lk) {
    throw new RangeError("attention: q/k/v shapes");
  }
  const target = [b, heads, lq, lk];
  if (mask) {
    checkSize(mask, "attention mask");
    if (mask.shape.length > 4) throw new RangeError("attention: mask rank above 4");
    mask.shape.forEach((d, i) => {
      const t = target[4 - mask.shape.length + i];
      if (d !== 1 && d !== t) {
        throw new RangeError(`attention: mask [${mask.shape}] does not broadcast to [${target}]`);
      }
    });
  }
  const maskStrides = mask ? strides(mask.shape) : [];
  const d = hd / heads;
  const scale = 1 / Math.sqrt(d);
  const out = new Float64Array(b * lq * hd);
  const logits = new Float64Array(lk);
  for (let bi = 0; bi < b; bi++) {
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < lq; i++) {
        let max = -Infinity;
        for (let j = 0; j < lk; j++) {
          let dot = 0;
          for (let e = 0; e < d; e++) {
            dot += q.data[(bi * lq + i) * hd + h * d + e] * k.data[(bi * lk + j) * hd + h * d + e];
          }
          let l = dot * scale;
          if (mask) l += mask.data[broadcastOffset(mask.shape, maskStrides, [bi, h, i, j])];
          logits[j] = l;
          max = Math.max(max, l);
        }
        let sum = 0;
        for (let j = 0; j < lk; j++) {
          logits[j] = Math.exp(logits[j] - max);
          sum += logits[j];
        }
        for (let e = 0; e < d; e++) {
          let acc = 0;
          for (let j = 0; j < lk; j++) acc += logits[j] * v.data[(bi * lk + j) * hd + h * d + e];
          out[(bi * lq + i) * hd + h * d + e] = acc / sum;
        }
      }
    }
  }
  return { data: out, shape: [b, lq, hd] };
}

/**
 * The error function, to about 1e-15 absolute: its Maclaurin series for |x| < 3, and for larger |x|
 * 1 - erfc(|x|) with erfc from its continued fraction (Laplace), evaluated bottom-up.
 */
export function erf(x: number): number {
  if (Number.isNaN(x)) return NaN;
  const ax = Math.abs(x);
  if (ax < 3) {
    // erf x = 2/sqrt(pi) sum_n (-1)^n x^(2n+1) / (n! (2n+1))
    const x2 = x * x;
    let term = x; // (-1)^n x^(2n+1) / n!
    let sum = x;
    for (let n = 1; n < 100; n++) {
      term *= -x2 / n;
      const t = term / (2 * n + 1);
      sum += t;
      if (Math.abs(t) < 1e-17 * Math.abs(sum)) break;
    }
    return (2 / Math.sqrt(Math.PI)) * sum;
  }
  if (ax > 6.5) return Math.sign(x); // erfc(6.5) < 4e-20
  // erfc x = exp(-x^2)/sqrt(pi) * 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + ...)))))
  let f = ax;
  for (let k = 80; k >= 1; k--) f = ax + (k / 2) / f;
  const erfc = Math.exp(-ax * ax) / (Math.sqrt(Math.PI) * f);
  return Math.sign(x) * (1 - erfc);
}

/** Exact GELU (torch.nn.GELU(approximate="none")): 0.5 x (1 + erf(x / sqrt 2)), elementwise. */
export function gelu(x: ArrayLike<number>): Float64Array {
  return Float64Array.from(x, (v) => 0.5 * v * (1 + erf(v / Math.SQRT2)));
}

/** CLIP's quick_gelu: x sigmoid(1.702 x), elementwise. */
export function quickGelu(x: ArrayLike<number>): Float64Array {
  return Float64Array.from(x, (v) => v / (1 + Math.exp(-1.702 * v)));
}

/** SiLU (swish): x sigmoid(x), elementwise. */
export function silu(x: ArrayLike<number>): Float64Array {
  return Float64Array.from(x, (v) => v / (1 + Math.exp(-v)));
}

/** F.interpolate(x, scale_factor=2, mode="nearest") for x [N, C, H, W]: out[.., y, x] = in[.., y>>1, x>>1]. */
export function upsampleNearest2x(x: RefInput): RefTensor {
  checkSize(x, "upsample x");
  const [n, c, h, w] = x.shape;
  const out = new Float64Array(n * c * 4 * h * w);
  for (let p = 0; p < n * c; p++) {
    for (let y = 0; y < 2 * h; y++) {
      for (let xx = 0; xx < 2 * w; xx++) {
        out[(p * 2 * h + y) * 2 * w + xx] = x.data[(p * h + (y >> 1)) * w + (xx >> 1)];
      }
    }
  }
  return { data: out, shape: [n, c, 2 * h, 2 * w] };
}

/** torch.permute: out.shape[i] = x.shape[perm[i]]. */
export function transpose(x: RefInput, perm: readonly number[]): RefTensor {
  checkSize(x, "transpose x");
  const rank = x.shape.length;
  if (perm.length !== rank || [...perm].sort().some((p, i) => p !== i)) {
    throw new RangeError(`transpose: perm [${perm}] for rank ${rank}`);
  }
  const shape = perm.map((p) => x.shape[p]);
  const inStrides = strides(x.shape);
  const out = new Float64Array(x.data.length);
  const idx = new Array<number>(rank).fill(0);
  for (let o = 0; o < out.length; o++) {
    let off = 0;
    for (let i = 0; i < rank; i++) off += idx[i] * inStrides[perm[i]];
    out[o] = x.data[off];
    for (let i = rank - 1; i >= 0; i--) {
      if (++idx[i] < shape[i]) break;
      idx[i] = 0;
    }
  }
  return { data: out, shape };
}

/** torch.chunk into `n` equal parts along `axis` (negative counts from the end); the size must divide. */
export function chunk(x: RefInput, n: number, axis: number): RefTensor[] {
  checkSize(x, "chunk x");
  const ax = axis < 0 ? axis + x.shape.length : axis;
  const size = x.shape[ax];
  if (size % n !== 0) throw new RangeError(`chunk: axis ${axis} of size ${size} into ${n} parts`);
  const part = size / n;
  const outer = numel(x.shape.slice(0, ax));
  const inner = numel(x.shape.slice(ax + 1));
  const parts: RefTensor[] = [];
  for (let p = 0; p < n; p++) {
    const shape = [...x.shape];
    shape[ax] = part;
    const out = new Float64Array(outer * part * inner);
    for (let o = 0; o < outer; o++) {
      for (let i = 0; i < part * inner; i++) {
        out[o * part * inner + i] = x.data[(o * size + p * part) * inner + i];
      }
    }
    parts.push({ data: out, shape });
  }
  return parts;
}

/** NCHW -> [N, H*W, C]. */
export function toSequence(x: RefInput): RefTensor {
  const [n, c, h, w] = x.shape;
  return transpose({ data: x.data, shape: [n, c, h * w] }, [0, 2, 1]);
}

/** [N, H*W, C] -> [N, C, H, W]. */
export function fromSequence(seq: RefInput, h: number, w: number): RefTensor {
  const [n, l, c] = seq.shape;
  if (l !== h * w) throw new RangeError(`fromSequence: ${l} positions for ${h}x${w}`);
  const t = transpose(seq, [0, 2, 1]);
  return { data: t.data, shape: [n, c, h, w] };
}
