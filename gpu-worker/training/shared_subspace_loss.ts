/**
 * CIDM's task-shared term (Dong et al., NeurIPS 2024): every task's LoRA delta at layer l should lie near one
 * shared low-dimensional subspace, R2 = sum_i sum_l ||dW_i^l - H_i^l W*^l||_F^2, with dW_i^l = (alpha / rank)
 * up_i^l down_i^l (previous tasks: constant factors; the current task: the trained factors), a shared
 * W*^l [dim, in] and a per-task projection H_i^l [out, dim]. It is computed from the factors, never forming
 * dW ([out, in] per task and layer would be hundreds of MB for SD's attention): with A = c U D and B = H W*,
 * ||A - B||^2 = c^2 <U^T U, D D^T> - 2c <U^T H, D W*^T> + <H^T H, W* W*^T>, all rank- or dim-sized.
 *
 * H and W* are tensors of the term, named `<name>.<path>.subspace` and `<name>.<path>.projection.task<i>` (i
 * = 0 .. previous.length, the current task last). CIDM's two-step optimisation alternates (a) the tokens and
 * dW_g with H, W* fixed and (b) H, W* with the rest fixed: keep both trainable and step one group of
 * `trainer.params()` at a time, or build the term with `train` off for a set to make it a constant input.
 * `state` carries their values across trainers (tasks): the term takes what it finds there and puts the
 * arrays it uses back, so the caller holds the live values.
 *
 * @example
 * ```ts
 * const state = new Map<string, Float32Array>();
 * const r2 = sharedSubspaceLoss({ previous: [task1Lora], weight: 1e-2, state });
 * const trainer = await DiffusionTrainer.create(runner, folder, { batch: 1, lora, auxLosses: [r2] });
 * ```
 */
import type { Value } from "../graph/builder.ts";
import { loraInputNames } from "../models/layers.ts";
import type { LoraWeights } from "../pipelines/stable_diffusion.ts";
import { Rng } from "../random.ts";
import { type AuxLoss, type AuxLossContext, sumOf } from "./aux_losses.ts";

export interface SharedSubspaceLossOptions {
  /** The previous tasks' LoRAs, by module path; a layer a task lacks adds no part for that task. */
  previous: readonly LoraWeights[];
  weight: number;
  /** Dimension of each W*^l; default the LoRA rank. */
  dim?: number;
  /** Which sets get gradients (default both). */
  train?: { projections?: boolean; subspace?: boolean };
  /** Start values by tensor name; filled with every array the term uses. */
  state?: Map<string, Float32Array>;
  /** Seed of W*'s random start (H starts at zero). */
  seed?: number;
  /** Default "cidm.shared". */
  name?: string;
}

/** The term R2 over every trained LoRA layer. */
export function sharedSubspaceLoss(o: SharedSubspaceLossOptions): AuxLoss {
  const name = o.name ?? "cidm.shared";
  return {
    name,
    weight: o.weight,
    build(ctx): Value {
      if (!ctx.lora) throw new RangeError(`${name}: needs trained LoRA factors (lora)`);
      const dim = o.dim ?? ctx.lora.rank;
      if (!(Number.isInteger(dim) && dim >= 1)) {
        throw new RangeError(`${name}: dim must be an integer >= 1, got ${dim}`);
      }
      const state = o.state ?? new Map<string, Float32Array>();
      const take = (tensor: string, shape: number[], init: () => Float32Array, trained: boolean) => {
        const data = state.get(tensor) ?? init();
        state.set(tensor, data);
        return ctx.tensor({ name: tensor, shape, data, trained });
      };
      const parts: Value[] = [];
      const current = ctx.lora.alpha / ctx.lora.rank;
      for (const m of ctx.loraModules) {
        const rng = new Rng(((o.seed ?? 0) ^ hash(m.path)) >>> 0);
        const subspace = take(
          `${name}.${m.path}.subspace`,
          [dim, m.inFeatures],
          () => rng.normal(dim * m.inFeatures, 1 / Math.sqrt(m.inFeatures)),
          o.train?.subspace ?? true,
        );
        const projection = (i: number) =>
          take(
            `${name}.${m.path}.projection.task${i}`,
            [m.outFeatures, dim],
            () => new Float32Array(m.outFeatures * dim),
            o.train?.projections ?? true,
          );
        o.previous.forEach((task, i) => {
          const w = task.modules.get(m.path);
          if (!w) return;
          if (w.down.length !== w.rank * m.inFeatures || w.up.length !== m.outFeatures * w.rank) {
            throw new RangeError(
              `${name}: task ${i} ("${task.name}") at ${m.path}: expected down [${w.rank}, ${m.inFeatures}] and up [${m.outFeatures}, ${w.rank}]`,
            );
          }
          const prefix = `${name}.${m.path}.task${i}`;
          const up = ctx.tensor({
            name: `${prefix}.up`,
            shape: [m.outFeatures, w.rank],
            data: w.up,
            trained: false,
          });
          const down = ctx.tensor({
            name: `${prefix}.down`,
            shape: [w.rank, m.inFeatures],
            data: w.down,
            trained: false,
          });
          parts.push(residual(ctx, up, down, (task.alpha ?? w.rank) / w.rank, projection(i), subspace));
        });
        const n = loraInputNames(m.path);
        parts.push(
          residual(
            ctx,
            ctx.trainedValue(n.up),
            ctx.trainedValue(n.down),
            current,
            projection(o.previous.length),
            subspace,
          ),
        );
      }
      return sumOf(ctx.g, parts);
    },
  };
}

/** ||c U D - H W||_F^2 from the factors: c^2 <U^T U, D D^T> - 2c <U^T H, D W^T> + <H^T H, W W^T>. */
function residual(ctx: AuxLossContext, U: Value, D: Value, c: number, H: Value, W: Value): Value {
  const g = ctx.g;
  const t = (x: Value) => g.op("Transpose", [x], { perm: [1, 0] });
  const inner = (a: Value, b: Value) => g.op("ReduceSum", [g.op("Mul", [a, b])], { keepdims: 0 });
  const delta = inner(g.op("MatMul", [t(U), U]), g.op("MatMul", [D, t(D)]));
  const cross = inner(g.op("MatMul", [t(U), H]), g.op("MatMul", [D, t(W)]));
  const fit = inner(g.op("MatMul", [t(H), H]), g.op("MatMul", [W, t(W)]));
  return g.op("Add", [
    g.op("Sub", [g.op("Mul", [delta, g.scalar(c * c)]), g.op("Mul", [cross, g.scalar(2 * c)])]),
    fit,
  ]);
}

function hash(s: string): number {
  return [...s].reduce((h, ch) => Math.imul(h ^ ch.charCodeAt(0), 16777619) >>> 0, 2166136261);
}
