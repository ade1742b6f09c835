/**
 * Layers with parameters, named as diffusers/transformers name them: `ModelContext` joins the graph builder
 * (current module path), the weight source, and the adapter hooks. Architectures call `ctx.linear("to_q", ...)`
 * inside `ctx.scope("attn1", ...)` and get the tensor `...attn1.to_q.weight`.
 *
 * Adapters attach here and only here: a linear whose module path matches a LoRA target gets a low-rank
 * branch whose factors and per-rank scales are graph inputs, so one session serves every adapter and
 * a scale can change at every sampling step.
 */
import type { Dim, GraphBuilder, Value } from "../graph/builder.ts";
import * as ops from "../graph/ops.ts";
import type { Init, WeightSource } from "./weights.ts";
import {
  type GateSite,
  loraGate,
  loraRegionInput,
  REGION_MASKS_INPUT,
  RegionMasks,
  type UNetConditioning,
} from "./conditioning.ts";

/**
 * LoRA slots: which linears and convolutions get a low-rank branch (module path patterns, e.g.
 * /attn[12]\.to_[qkv]$/; see `lora_targets.ts` for the named sets).
 */
export interface LoraSlots {
  targets: RegExp[];
  /** A fixed rank makes the slot's shapes static (training graphs); absent means any rank per run. */
  rank?: number;
}

/**
 * A module with a LoRA slot. Factors are fed flat: down [rank, inFeatures], up [outFeatures, rank]. For a
 * convolution (`kernel` > 0) inFeatures is in_channels x kernel x kernel: down is kohya's `lora_down` conv
 * [rank, in, k, k] (same stride and padding as the module), up its 1x1 `lora_up` [out, rank, 1, 1].
 */
export interface LoraModule {
  path: string;
  inFeatures: number;
  outFeatures: number;
  /** Convolution kernel size; 0 for a linear. */
  kernel: number;
}

/** The factors' shapes as files hold them (4-D for convolutions). */
export function loraFactorShapes(m: LoraModule, rank: number): { down: number[]; up: number[] } {
  if (!m.kernel) return { down: [rank, m.inFeatures], up: [m.outFeatures, rank] };
  const k = m.kernel;
  return { down: [rank, m.inFeatures / (k * k), k, k], up: [m.outFeatures, rank, 1, 1] };
}

/** Input names of a LoRA slot for the module at `path`. */
export function loraInputNames(path: string) {
  return { down: `lora.${path}.down`, up: `lora.${path}.up`, scale: `lora.${path}.scale` };
}

export class ModelContext {
  /** Module paths that got a LoRA slot, with their (in, out) features. */
  readonly loraModules: LoraModule[] = [];
  /** Parameters that became graph inputs (trainable), with their current values. */
  readonly trainables = new Map<string, { shape: number[]; data: Float32Array }>();
  /** Where the module being built acts (set by the architecture; see `GateSite`). */
  private site: GateSite = { kind: "global" };
  private regionMasks: RegionMasks | null = null;

  constructor(
    readonly g: GraphBuilder,
    readonly weights: WeightSource,
    readonly opts: {
      lora?: LoraSlots;
      trainable?: (name: string) => boolean;
      conditioning?: UNetConditioning;
    } = {},
  ) {}

  scope<T>(name: string | number, fn: () => T): T {
    return this.g.scope(name, fn);
  }

  /** Builds `fn` with its modules acting at `site` (pixels at a level, attention contexts, or nothing spatial). */
  at<T>(site: GateSite, fn: () => T): T {
    const prev = this.site;
    this.site = site;
    try {
      return fn();
    } finally {
      this.site = prev;
    }
  }

  get currentSite(): GateSite {
    return this.site;
  }

  /** A graph input several modules read (declared by the first). */
  sharedInput(name: string, shape: Dim[]): Value {
    return this.g.inputs.some((i) => i.name === name)
      ? this.g.valueOf(name)
      : this.g.input(name, "float32", shape);
  }

  /** The regional graph's masks (declared on first use), or null in a graph without regions. */
  regions(): RegionMasks | null {
    if (!this.opts.conditioning?.regions) return null;
    this.regionMasks ??= new RegionMasks(
      this.g,
      this.g.input(REGION_MASKS_INPUT, "float32", ["regions", "batch", "latent_height", "latent_width"]),
    );
    return this.regionMasks;
  }

  /** A parameter of the current module: an initializer, or a graph input when trainable. */
  param(leaf: string, shape: number[], init: Init): Value {
    const name = this.g.path(leaf);
    const data = this.weights.get(name, shape, init);
    if (this.opts.trainable?.(name)) {
      this.trainables.set(name, { shape, data });
      return this.g.input(name, "float32", shape);
    }
    return this.g.initializer(name, { dtype: "float32", dims: shape, data });
  }

  linear(name: string, x: Value, inF: number, outF: number, bias = true): Value {
    return this.scope(name, () => {
      const w = this.param("weight", [outF, inF], "fan_in");
      const b = bias ? this.param("bias", [outF], "zeros") : null;
      let y = ops.linear(this.g, x, w, b);
      const path = this.g.path();
      if (this.hasLora(path)) y = this.g.op("Add", [y, this.loraBranch(x, path, inF, outF, 0)]);
      return y;
    });
  }

  private hasLora(path: string): boolean {
    return !!this.opts.lora?.targets.some((r) => r.test(path));
  }

  /**
   * x -> up(gate * scale * down(x)) with down [r, in], up [out, r], scale [r]: several LoRAs share a slot,
   * each rank row with its scale (and, in a regional graph, its region's gate). For a convolution, down runs
   * as a conv with the module's kernel, stride and padding, up as a 1x1 conv.
   */
  private loraBranch(
    x: Value,
    path: string,
    inF: number,
    outF: number,
    kernel: number,
    conv?: ops.Conv2dOptions,
  ): Value {
    const g = this.g;
    const n = loraInputNames(path);
    // Each slot has its own symbolic rank: adapters of different ranks (or none) ride on different slots in
    // one run, and a shared dim name would tell ONNX Runtime they are equal.
    const r = this.opts.lora?.rank ?? `rank.${path}`;
    const down = g.input(n.down, "float32", [r, inF]);
    const up = g.input(n.up, "float32", [outF, r]);
    const scale = g.input(n.scale, "float32", [r]);
    this.loraModules.push({ path, inFeatures: inF, outFeatures: outF, kernel });
    let h: Value;
    if (kernel) {
      const inC = inF / (kernel * kernel);
      const downW = g.op("Reshape", [down, g.ints([-1, inC, kernel, kernel])]);
      h = g.op("Mul", [
        ops.conv2d(g, x, downW, null, conv),
        g.op("Reshape", [scale, g.ints([1, -1, 1, 1])]),
      ]);
    } else {
      h = g.op("Mul", [ops.linear(g, x, down), scale]);
    }
    const masks = this.regions();
    if (masks) {
      const region = g.input(loraRegionInput(path), "int64", [r]);
      h = g.op("Mul", [h, loraGate(g, masks, this.site, region, kernel ? "nchw" : "sequence", h)]);
    }
    if (kernel) return ops.conv2d(g, h, g.op("Reshape", [up, g.ints([0, -1, 1, 1])]), null);
    return ops.linear(g, h, up);
  }

  conv(name: string, x: Value, inC: number, outC: number, k: number, o: ops.Conv2dOptions = {}): Value {
    return this.scope(name, () => {
      const w = this.param("weight", [outC, inC, k, k], "fan_in");
      const b = this.param("bias", [outC], "zeros");
      const opts = { padding: o.padding ?? (k - 1) / 2, stride: o.stride };
      let y = ops.conv2d(this.g, x, w, b, opts);
      const path = this.g.path();
      if (this.hasLora(path)) {
        y = this.g.op("Add", [y, this.loraBranch(x, path, inC * k * k, outC, k, opts)]);
      }
      return y;
    });
  }

  groupNorm(name: string, x: Value, groups: number, channels: number, eps: number): Value {
    return this.scope(name, () => {
      const w = this.param("weight", [channels], "ones");
      const b = this.param("bias", [channels], "zeros");
      return ops.groupNorm(this.g, x, w, b, groups, channels, eps);
    });
  }

  layerNorm(name: string, x: Value, dim: number, eps: number): Value {
    return this.scope(name, () => {
      const w = this.param("weight", [dim], "ones");
      const b = this.param("bias", [dim], "zeros");
      return ops.layerNorm(this.g, x, w, b, eps);
    });
  }

  embedding(name: string, ids: Value, num: number, dim: number): Value {
    return this.scope(name, () => {
      const table = this.param("weight", [num, dim], "embedding");
      return this.g.op("Gather", [table, ids], { axis: 0 });
    });
  }
}
