/**
 * Layers with parameters, named as diffusers/transformers name them: `ModelContext` joins the graph builder
 * (current module path), the weight source, and the adapter hooks. Architectures call `ctx.linear("to_q", ...)`
 * inside `ctx.scope("attn1", ...)` and get the tensor `...attn1.to_q.weight`.
 *
 * Adapters attach here and only here: a linear whose module path matches a LoRA target gets a low-rank
 * branch whose factors and per-rank scales are graph inputs, so one session serves every adapter and
 * a scale can change at every sampling step.
 */
import type { GraphBuilder, Value } from "../graph/builder.ts";
import * as ops from "../graph/ops.ts";
import type { Init, WeightSource } from "./weights.ts";

/** LoRA slots: which linears get a low-rank branch (module path patterns, e.g. /attn[12]\.to_[qkv]$/). */
export interface LoraSlots {
  targets: RegExp[];
  /** A fixed rank makes the slot's shapes static (training graphs); absent means any rank per run. */
  rank?: number;
}

/** Input names of a LoRA slot for the module at `path`. */
export function loraInputNames(path: string) {
  return { down: `lora.${path}.down`, up: `lora.${path}.up`, scale: `lora.${path}.scale` };
}

export class ModelContext {
  /** Module paths that got a LoRA slot, with their (in, out) features. */
  readonly loraModules: { path: string; inFeatures: number; outFeatures: number }[] = [];
  /** Parameters that became graph inputs (trainable), with their current values. */
  readonly trainables = new Map<string, { shape: number[]; data: Float32Array }>();

  constructor(
    readonly g: GraphBuilder,
    readonly weights: WeightSource,
    readonly opts: { lora?: LoraSlots; trainable?: (name: string) => boolean } = {},
  ) {}

  scope<T>(name: string | number, fn: () => T): T {
    return this.g.scope(name, fn);
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
      if (this.opts.lora?.targets.some((r) => r.test(path))) {
        y = this.g.op("Add", [y, this.loraBranch(x, path, inF, outF)]);
      }
      return y;
    });
  }

  /** x -> ((x down^T) * scale) up^T with down [r, in], up [out, r], scale [r]: several LoRAs share a slot. */
  private loraBranch(x: Value, path: string, inF: number, outF: number): Value {
    const n = loraInputNames(path);
    // Each slot has its own symbolic rank: adapters of different ranks (or none) ride on different slots in
    // one run, and a shared dim name would tell ONNX Runtime they are equal.
    const r = this.opts.lora?.rank ?? `rank.${path}`;
    const down = this.g.input(n.down, "float32", [r, inF]);
    const up = this.g.input(n.up, "float32", [outF, r]);
    const scale = this.g.input(n.scale, "float32", [r]);
    this.loraModules.push({ path, inFeatures: inF, outFeatures: outF });
    const h = this.g.op("Mul", [ops.linear(this.g, x, down), scale]);
    return ops.linear(this.g, h, up);
  }

  conv(name: string, x: Value, inC: number, outC: number, k: number, o: ops.Conv2dOptions = {}): Value {
    return this.scope(name, () => {
      const w = this.param("weight", [outC, inC, k, k], "fan_in");
      const b = this.param("bias", [outC], "zeros");
      return ops.conv2d(this.g, x, w, b, { padding: o.padding ?? (k - 1) / 2, stride: o.stride });
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
