/**
 * CIDM's task-specific term (Dong et al., NeurIPS 2024, concept consolidation): the new task's low-rank
 * subspace at every LoRA layer is pushed orthogonal to each previous task's, so learning concept g does not
 * overwrite the directions concepts 1..g-1 use. Per layer l and previous task i the term is
 * mean |U_g^T U_i| over the [r_g, r_i] matrix of inner products between the up factors' columns (the
 * official code's mean |W_up,g W_up,i^T| weighted 0.1; the paper writes the same with the down factors,
 * `factor: "down"`: mean |D_g D_i^T|), summed over layers and previous tasks. The product is taken in rank
 * space because that is what vanishes exactly when the column (row) spaces are orthogonal; the [out, out]
 * product U_g U_i^T is zero only when a factor is. Previous factors are constant inputs.
 *
 * @example
 * ```ts
 * const trainer = await DiffusionTrainer.create(runner, folder, {
 *   batch: 1,
 *   lora: { targets: [/attn2\.to_[kv]$/], rank: 4, alpha: 4 },
 *   auxLosses: [orthogonalityLoss({ previous: [task1Lora, task2Lora] })],
 * });
 * (await trainer.computeGradients(examples, rng)).auxLosses["cidm.orthogonality"];
 * ```
 */
import type { Value } from "../graph/builder.ts";
import { loraInputNames } from "../models/layers.ts";
import type { LoraWeights } from "../pipelines/stable_diffusion.ts";
import { type AuxLoss, sumOf } from "./aux_losses.ts";

export interface OrthogonalityLossOptions {
  /** The previous tasks' LoRAs, by module path (UNet or text encoder); layers a task lacks are skipped. */
  previous: readonly LoraWeights[];
  /** Default 0.1 (the official code's). */
  weight?: number;
  /** Which factor spans the subspace: "up" (default, the official code) or "down" (the paper). */
  factor?: "up" | "down";
  /** Default "cidm.orthogonality". */
  name?: string;
}

/** The term; every trained LoRA layer against every previous task that has it. */
export function orthogonalityLoss(o: OrthogonalityLossOptions): AuxLoss {
  const name = o.name ?? "cidm.orthogonality";
  const factor = o.factor ?? "up";
  if (factor !== "up" && factor !== "down") {
    throw new RangeError(`orthogonalityLoss: factor must be "up" or "down", got ${factor}`);
  }
  return {
    name,
    weight: o.weight ?? 0.1,
    build(ctx): Value {
      const { g } = ctx;
      if (!ctx.lora) throw new RangeError(`${name}: needs trained LoRA factors (lora)`);
      const parts: Value[] = [];
      for (const m of ctx.loraModules) {
        const current = ctx.trainedValue(loraInputNames(m.path)[factor]);
        o.previous.forEach((task, i) => {
          const w = task.modules.get(m.path);
          if (!w) return;
          const [data, shape] = factor === "up"
            ? [w.up, [m.outFeatures, w.rank]]
            : [w.down, [w.rank, m.inFeatures]];
          if (data.length !== shape[0] * shape[1]) {
            throw new RangeError(
              `${name}: task ${i} ("${task.name}") at ${m.path}: ${factor} has ${data.length} values, expected [${shape}]`,
            );
          }
          const prev = ctx.tensor({ name: `${name}.${m.path}.task${i}`, shape, data, trained: false });
          // up: [r_g, out] x [out, r_i]; down: [r_g, in] x [in, r_i].
          const product = factor === "up"
            ? g.op("MatMul", [g.op("Transpose", [current], { perm: [1, 0] }), prev])
            : g.op("MatMul", [current, g.op("Transpose", [prev], { perm: [1, 0] })]);
          parts.push(g.op("ReduceMean", [g.op("Abs", [product])], { keepdims: 0 }));
        });
      }
      return sumOf(g, parts);
    },
  };
}
