/**
 * Auxiliary loss terms of the training graph: regularizers on trained values (LoRA factors, token embeddings,
 * the text encoder's output) that the same autodiff differentiates with the diffusion loss, so one session run
 * still gives the total loss and every gradient. A term appends ops for its scalar (unweighted) value; the
 * trainer adds `weight` x that scalar to the loss and reports the scalar per run (`auxLosses[name]`).
 *
 * A term reads trained values by name (`ctx.trainedValue`) and may add tensors of its own (`ctx.tensor`):
 * trained ones get a gradient and join the optimizer's parameters, constant ones are fed from their array at
 * every run, so a caller can change them between runs (previous tasks' factors, a frozen subspace).
 *
 * @example
 * ```ts
 * // L2 on every UNet LoRA up factor, weight 1e-3.
 * const upL2: AuxLoss = {
 *   name: "up_l2",
 *   weight: 1e-3,
 *   build: (ctx) => sumOf(ctx.g, ctx.loraModules.map((m) => {
 *     const up = ctx.trainedValue(loraInputNames(m.path).up);
 *     return ctx.g.op("ReduceSum", [ctx.g.op("Mul", [up, up])], { keepdims: 0 });
 *   })),
 * };
 * await DiffusionTrainer.create(runner, folder, { batch: 1, lora, auxLosses: [upL2] });
 * ```
 */
import type { GraphBuilder, Value } from "../graph/builder.ts";
import type { LoraModule } from "../models/layers.ts";
import { Tensor } from "../tensor.ts";
import type { TrainedTensor, TrainingExample } from "./diffusion_trainer.ts";

/** What a term sees while it builds: the graph, the trained values, and where to declare its own tensors. */
export interface AuxLossContext {
  readonly g: GraphBuilder;
  /** Samples per run and the text context length. */
  readonly batch: number;
  readonly sequence: number;
  /** The text encoder's output [batch, sequence, hidden] when the encoder is in the graph. */
  readonly textHiddenStates?: Value;
  /** Modules with trained LoRA factors (UNet first, then the text encoder), and their rank and alpha. */
  readonly loraModules: readonly LoraModule[];
  readonly lora?: { rank: number; alpha: number };
  /** The graph input of a trained tensor; RangeError naming the trained tensors when there is none. */
  trainedValue(name: string): Value;
  /**
   * Declares a tensor of the term: `trained` ones are optimized with the rest (kind "aux" unless given), the
   * others are constant inputs fed from `data` at every run. Returns its graph input.
   */
  tensor(
    t: { name: string; shape: number[]; data: Float32Array; trained: boolean; kind?: "aux" | "probe" },
  ): Value;
}

/** One auxiliary term of {@link DiffusionTrainingOptions.auxLosses}. */
export interface AuxLoss {
  /** Reported as `auxLosses[name]`; also the prefix of the tensors the term declares. */
  name: string;
  /** Multiplies the term's value in the total loss; >= 0. */
  weight: number;
  /** Appends the term's ops; returns its unweighted scalar (shape []). Called once, by `DiffusionTrainer.create`. */
  build(ctx: AuxLossContext): Value;
  /** Per-run inputs the term declared with `g.input` (e.g. labels taken from the examples). */
  feeds?(examples: readonly TrainingExample[]): Record<string, Tensor>;
}

/**
 * The graph side of the terms: collects what they declare (trained tensors into `trained`, constants into the
 * per-run feeds) and appends `loss + sum_k weight_k * term_k`, each term also a graph output `<name>.loss`.
 * Also what the gradient checks build terms on, without a model.
 *
 * @example
 * ```ts
 * const aux = new AuxLossGraph(g, trained, { batch: 1, sequence: 77, loraModules, lora: { rank: 4, alpha: 4 } });
 * const total = aux.append(loss, [orthogonalityLoss({ previous })]);
 * ```
 */
export class AuxLossGraph implements AuxLossContext {
  readonly batch: number;
  readonly sequence: number;
  readonly textHiddenStates?: Value;
  readonly loraModules: readonly LoraModule[];
  readonly lora?: { rank: number; alpha: number };
  private readonly constants: { name: string; shape: number[]; data: Float32Array }[] = [];
  private terms: AuxLoss[] = [];

  constructor(
    readonly g: GraphBuilder,
    /** The trainer's trained tensors; trained tensors of the terms are appended. */
    private readonly trained: TrainedTensor[],
    o: Pick<AuxLossContext, "batch" | "sequence" | "textHiddenStates" | "loraModules" | "lora">,
  ) {
    this.batch = o.batch;
    this.sequence = o.sequence;
    this.textHiddenStates = o.textHiddenStates;
    this.loraModules = o.loraModules;
    this.lora = o.lora;
  }

  trainedValue(name: string): Value {
    if (!this.trained.some((t) => t.name === name)) {
      const names = this.trained.map((t) => t.name);
      throw new RangeError(
        `no trained tensor "${name}"; trained are ${names.slice(0, 8).join(", ")}${
          names.length > 8 ? `, ... (${names.length})` : ""
        }`,
      );
    }
    return this.g.valueOf(name);
  }

  tensor(
    t: { name: string; shape: number[]; data: Float32Array; trained: boolean; kind?: "aux" | "probe" },
  ): Value {
    const size = t.shape.reduce((a, b) => a * b, 1);
    if (t.data.length !== size) {
      throw new RangeError(`tensor "${t.name}": ${t.data.length} values for shape [${t.shape}] (${size})`);
    }
    const v = this.g.input(t.name, "float32", t.shape);
    if (t.trained) this.trained.push({ name: t.name, shape: t.shape, data: t.data, kind: t.kind ?? "aux" });
    else this.constants.push({ name: t.name, shape: t.shape, data: t.data });
    return v;
  }

  /** Builds `terms` and returns `loss` plus their weighted sum, in the terms' order. */
  append(loss: Value, terms: readonly AuxLoss[]): Value {
    let total = loss;
    const seen = new Set<string>();
    for (const term of terms) {
      if (seen.has(term.name)) throw new RangeError(`two auxiliary losses are named "${term.name}"`);
      seen.add(term.name);
      if (!(term.weight >= 0 && Number.isFinite(term.weight))) {
        throw new RangeError(
          `auxiliary loss "${term.name}": weight must be a finite number >= 0, got ${term.weight}`,
        );
      }
      const value = term.build(this);
      this.g.output(value, outputName(term));
      total = this.g.op("Add", [total, this.g.op("Mul", [value, this.g.scalar(term.weight)])]);
      this.terms.push(term);
    }
    return total;
  }

  /** The graph outputs holding the terms' values, in order. */
  get outputs(): string[] {
    return this.terms.map(outputName);
  }

  get names(): string[] {
    return this.terms.map((t) => t.name);
  }

  /** The constants' current values and every term's per-run inputs. */
  feeds(examples: readonly TrainingExample[]): Record<string, Tensor> {
    const feeds: Record<string, Tensor> = {};
    for (const c of this.constants) feeds[c.name] = Tensor.f32(c.shape, c.data);
    for (const t of this.terms) if (t.feeds) Object.assign(feeds, t.feeds(examples));
    return feeds;
  }
}

function outputName(t: AuxLoss): string {
  return `${t.name}.loss`;
}

/** Sum of scalars (0 for none), for terms that add up per-layer parts. */
export function sumOf(g: GraphBuilder, parts: Value[]): Value {
  if (!parts.length) return g.scalar(0);
  return parts.reduce((a, b) => g.op("Add", [a, b]));
}
