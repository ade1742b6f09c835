/**
 * AdamW over named Float32Array parameters, matching torch.optim.AdamW (decoupled weight decay, bias-corrected
 * moments, eps added to sqrt(v_hat)), with a per-parameter weight-decay opt-out and exportable state.
 *
 * Per parameter with gradient g, at its t-th update (t counted per parameter, as torch does):
 *   p <- p * (1 - lr * wd)                      (skipped when the parameter opts out of decay)
 *   m <- b1 * m + (1 - b1) * g
 *   v <- b2 * v + (1 - b2) * g^2
 *   p <- p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 *
 * @example
 * ```ts
 * const w = new Float32Array([1, -2]);
 * const opt = new AdamW([{ name: "w", data: w }], { lr: 1e-3 });
 * opt.step({ w: new Float32Array([0.5, -0.1]) }); // w updated in place
 * ```
 */

/** Hyperparameters, named as torch's (`weightDecay` is torch's `weight_decay`). */
export interface AdamWConfig {
  lr: number;
  betas: [number, number];
  eps: number;
  weightDecay: number;
}

/** torch.optim.AdamW's defaults. */
export const ADAMW_DEFAULTS: Readonly<AdamWConfig> = Object.freeze({
  lr: 1e-3,
  betas: [0.9, 0.999] as [number, number],
  eps: 1e-8,
  weightDecay: 1e-2,
});

/** A parameter the optimizer updates in place; `weightDecay: false` opts it out of decay (e.g. biases, norms). */
export interface OptimizerParam {
  name: string;
  data: Float32Array;
  weightDecay?: boolean;
}

/** Optimizer state for checkpoints: first/second moments and the per-parameter update count. */
export interface AdamWState {
  m: Record<string, Float32Array>;
  v: Record<string, Float32Array>;
  steps: Record<string, number>;
}

/** torch.optim.AdamW (amsgrad=False, maximize=False) in float32 storage with float64 arithmetic per element. */
export class AdamW {
  readonly config: AdamWConfig;
  private readonly params = new Map<string, OptimizerParam>();
  private readonly m = new Map<string, Float32Array>();
  private readonly v = new Map<string, Float32Array>();
  private readonly steps = new Map<string, number>();

  constructor(params: OptimizerParam[], config: Partial<AdamWConfig> = {}) {
    this.config = { ...ADAMW_DEFAULTS, ...config, betas: [...(config.betas ?? ADAMW_DEFAULTS.betas)] };
    const { lr, betas: [b1, b2], eps, weightDecay } = this.config;
    if (!(lr >= 0)) throw new RangeError(`AdamW: invalid learning rate ${lr}`);
    if (!(b1 >= 0 && b1 < 1) || !(b2 >= 0 && b2 < 1)) {
      throw new RangeError(`AdamW: invalid betas [${b1}, ${b2}]`);
    }
    if (!(eps >= 0)) throw new RangeError(`AdamW: invalid eps ${eps}`);
    if (!(weightDecay >= 0)) throw new RangeError(`AdamW: invalid weight decay ${weightDecay}`);
    for (const p of params) {
      if (this.params.has(p.name)) throw new Error(`AdamW: parameter "${p.name}" given twice`);
      this.params.set(p.name, p);
      this.m.set(p.name, new Float32Array(p.data.length));
      this.v.set(p.name, new Float32Array(p.data.length));
      this.steps.set(p.name, 0);
    }
  }

  /**
   * One update with learning rate `lr` (default: the configured one, pass the scheduled one per step).
   * Parameters without an entry in `grads` are left alone and their step count does not advance (torch's
   * behaviour for a `None` grad). A gradient for an unknown name or of the wrong length throws.
   */
  step(grads: Record<string, Float32Array>, lr: number = this.config.lr): void {
    for (const name of Object.keys(grads)) {
      const p = this.params.get(name);
      if (!p) throw new Error(`AdamW: gradient for unknown parameter "${name}"`);
      if (grads[name].length !== p.data.length) {
        throw new RangeError(
          `AdamW: gradient for "${name}" has ${grads[name].length} elements, the parameter ${p.data.length}`,
        );
      }
    }
    const { betas: [b1, b2], eps, weightDecay } = this.config;
    for (const [name, p] of this.params) {
      const g = grads[name];
      if (!g) continue;
      const t = this.steps.get(name)! + 1;
      this.steps.set(name, t);
      const m = this.m.get(name)!, v = this.v.get(name)!, x = p.data;
      const decay = p.weightDecay === false ? 1 : 1 - lr * weightDecay;
      const stepSize = lr / (1 - b1 ** t);
      const bc2Sqrt = Math.sqrt(1 - b2 ** t);
      for (let i = 0; i < x.length; i++) {
        const gi = g[i];
        const mi = (m[i] = b1 * m[i] + (1 - b1) * gi);
        const vi = (v[i] = b2 * v[i] + (1 - b2) * gi * gi);
        x[i] = x[i] * decay - stepSize * mi / (Math.sqrt(vi) / bc2Sqrt + eps);
      }
    }
  }

  /** Copies of the moments and step counts. */
  exportState(): AdamWState {
    const state: AdamWState = { m: {}, v: {}, steps: {} };
    for (const name of this.params.keys()) {
      state.m[name] = this.m.get(name)!.slice();
      state.v[name] = this.v.get(name)!.slice();
      state.steps[name] = this.steps.get(name)!;
    }
    return state;
  }

  /** Restores exported state; every parameter must be present with matching sizes. */
  importState(state: AdamWState): void {
    for (const [name, p] of this.params) {
      const m = state.m[name], v = state.v[name], t = state.steps[name];
      if (!m || !v || t === undefined) throw new Error(`AdamW: state has no entry for parameter "${name}"`);
      if (m.length !== p.data.length || v.length !== p.data.length) {
        throw new RangeError(
          `AdamW: state for "${name}" has ${m.length}/${v.length} elements, the parameter ${p.data.length}`,
        );
      }
      if (!Number.isSafeInteger(t) || t < 0) throw new RangeError(`AdamW: state step ${t} for "${name}"`);
      this.m.get(name)!.set(m);
      this.v.get(name)!.set(v);
      this.steps.set(name, t);
    }
    for (const name of Object.keys(state.steps)) {
      if (!this.params.has(name)) {
        throw new Error(`AdamW: state has an entry for unknown parameter "${name}"`);
      }
    }
  }
}
