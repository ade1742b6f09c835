/**
 * Linear probes on the text encoder's output as an auxiliary loss (ShapesWorld pretraining): a linear
 * classifier (`probe.<name>.weight` [classes, hidden], `.bias`; trained, never saved with the model) reads
 * each labelled token position, and the term is its mean cross-entropy over the positions the batch labels
 * (`TrainingExample.probeLabels[name]`, -1 = unlabelled). It asks the encoder to keep an attribute linearly
 * readable at those positions (e.g. an object's colour at every position after its colour word), not only
 * where the UNet happened to look in training.
 *
 * @example
 * ```ts
 * await DiffusionTrainer.create(runner, folder, {
 *   batch: 2,
 *   textEncoder: { trainable: () => true },
 *   auxLosses: [textProbeLoss({ name: "colour", classes: 12, weight: 0.1 })],
 * });
 * ```
 */
import type { Value } from "../graph/builder.ts";
import { Rng } from "../random.ts";
import { Tensor } from "../tensor.ts";
import type { AuxLoss } from "./aux_losses.ts";
import type { TrainingExample } from "./diffusion_trainer.ts";

/** One probe: its name (the key of `probeLabels`), class count and loss weight. */
export interface TextProbe {
  name: string;
  classes: number;
  weight: number;
}

/**
 * The probe's term, named `probe.<name>`: mean over labelled positions of -log softmax(h W^T + b)[label].
 * Probe weights start small and random (seeded by the probe's name), so the first steps do not pull hard on
 * the encoder. Needs the text encoder in the graph.
 */
export function textProbeLoss(p: TextProbe): AuxLoss {
  if (!(Number.isInteger(p.classes) && p.classes >= 2)) {
    throw new RangeError(`probe "${p.name}": classes must be an integer >= 2, got ${p.classes}`);
  }
  if (!(p.weight >= 0)) throw new RangeError(`probe "${p.name}": weight must be >= 0, got ${p.weight}`);
  const prefix = `probe.${p.name}`;
  let sequence = 0;
  return {
    name: prefix,
    weight: p.weight,
    build(ctx): Value {
      const hidden = ctx.textHiddenStates;
      if (!hidden) throw new RangeError("textProbes need the text encoder in the graph (textEncoder)");
      const { g, batch: B } = ctx;
      const L = sequence = ctx.sequence;
      const D = g.shapeOf(hidden)?.[2];
      if (typeof D !== "number") {
        throw new TypeError(`probe "${p.name}": the text features' width is not static`);
      }
      const seed = [...p.name].reduce((s, ch) => (s * 31 + ch.charCodeAt(0)) >>> 0, 7);
      const W = ctx.tensor({
        name: `${prefix}.weight`,
        shape: [p.classes, D],
        data: new Rng(seed).normal(p.classes * D, 0.01),
        trained: true,
        kind: "probe",
      });
      const bias = ctx.tensor({
        name: `${prefix}.bias`,
        shape: [p.classes],
        data: new Float32Array(p.classes),
        trained: true,
        kind: "probe",
      });
      const target = g.input(`${prefix}.target`, "float32", [B, L, p.classes]);
      const invCount = g.input(`${prefix}.inv_count`, "float32", []);
      const logits = g.op("Add", [g.op("MatMul", [hidden, g.op("Transpose", [W], { perm: [1, 0] })]), bias]);
      const logp = g.op("Log", [g.op("Add", [g.op("Softmax", [logits], { axis: -1 }), g.scalar(1e-8)])]);
      const nll = g.op("Neg", [g.op("ReduceSum", [g.op("Mul", [logp, target])], { keepdims: 0 })]);
      return g.op("Mul", [nll, invCount]);
    },
    feeds: (examples) => probeFeeds(p, examples, sequence),
  };
}

/** One-hot targets [B, L, classes] and 1 / (labelled positions) of a probe, checked against its classes. */
function probeFeeds(p: TextProbe, examples: readonly TrainingExample[], L: number): Record<string, Tensor> {
  const B = examples.length;
  const onehot = new Float32Array(B * L * p.classes);
  let count = 0;
  examples.forEach((ex, b) => {
    const labels = ex.probeLabels?.[p.name];
    if (!labels) return;
    if (labels.length !== L) {
      throw new RangeError(`example ${b}: probe "${p.name}" has ${labels.length} labels, expected ${L}`);
    }
    labels.forEach((c, l) => {
      if (c === -1) return;
      if (!(Number.isInteger(c) && c >= 0 && c < p.classes)) {
        throw new RangeError(
          `example ${b}: probe "${p.name}" label ${c} at position ${l} is outside 0..${
            p.classes - 1
          } (or -1)`,
        );
      }
      onehot[(b * L + l) * p.classes + c] = 1;
      count++;
    });
  });
  return {
    [`probe.${p.name}.target`]: Tensor.f32([B, L, p.classes], onehot),
    [`probe.${p.name}.inv_count`]: Tensor.f32([], new Float32Array([1 / Math.max(count, 1)])),
  };
}
