/**
 * Gradient check of one auxiliary loss term without a model: trained LoRA factors for a few stand-in modules
 * (random, non-zero: at LoRA's zero init some terms are flat), the term built on them by `AuxLossGraph`, and
 * `gradcheck`'s central differences for the factors and for every tensor the term trains. A new term's test
 * is one call.
 *
 * @example
 * ```ts
 * const r = await gradcheckAuxLoss(orthogonalityLoss({ previous }), { modules, rank: 2 });
 * assert(r.ok, r.report);
 * ```
 */
import { GraphBuilder, type Value } from "../graph/builder.ts";
import { gradcheck, type GradcheckResult } from "../graph/gradcheck.ts";
import { loraInputNames, type LoraModule } from "../models/layers.ts";
import { Rng } from "../random.ts";
import { Tensor } from "../tensor.ts";
import { OrtSession } from "../ort/session.ts";
import { type AuxLoss, AuxLossGraph } from "./aux_losses.ts";
import type { TrainedTensor } from "./diffusion_trainer.ts";

export interface AuxLossCheckOptions {
  modules: LoraModule[];
  rank: number;
  /** Default: rank (scale 1). */
  alpha?: number;
  /** Seed of the factors and of the check (default 0). */
  seed?: number;
  /** `gradcheck`'s relative step (its default when absent). */
  eps?: number;
}

/**
 * The term's value at random factors (rms 0.5, seeded) and its gradient check with respect to the factors
 * and every tensor the term trains. The term is built twice (a forward graph for the value, then the check),
 * so it must build the same both times (seeded starts, or a `state` it reads).
 */
export async function gradcheckAuxLoss(
  term: AuxLoss,
  o: AuxLossCheckOptions,
): Promise<GradcheckResult & { value: number; trained: TrainedTensor[] }> {
  const fwd = termGraph(term, o, new GraphBuilder("aux_value"));
  fwd.g.output(fwd.output, "value");
  const s = await OrtSession.create(fwd.g.toBytes(), { inputs: fwd.g.inputs }, "cpu");
  let value: number;
  try {
    value = (await s.run(fwd.feeds(), ["value"])).value.f[0];
  } finally {
    await s.release();
  }
  let built: ReturnType<typeof termGraph> | undefined;
  const r = await gradcheck({
    name: term.name,
    build: (g: GraphBuilder) => {
      built = termGraph(term, o, g);
      return { inputs: built.trained.map((t) => g.valueOf(t.name)), output: built.output };
    },
    feeds: () => built!.feeds(),
    seed: o.seed ?? 0,
    eps: o.eps,
  });
  return { ...r, value, trained: built!.trained };
}

function termGraph(term: AuxLoss, o: AuxLossCheckOptions, g: GraphBuilder) {
  const rng = new Rng(o.seed ?? 0);
  const trained: TrainedTensor[] = [];
  const factor = (name: string, shape: number[]) => {
    g.input(name, "float32", shape);
    trained.push({ name, shape, data: rng.normal(shape[0] * shape[1], 0.5), kind: "lora" });
  };
  for (const m of o.modules) {
    const n = loraInputNames(m.path);
    factor(n.down, [o.rank, m.inFeatures]);
    factor(n.up, [m.outFeatures, o.rank]);
  }
  const aux = new AuxLossGraph(g, trained, {
    batch: 1,
    sequence: 1,
    loraModules: o.modules,
    lora: { rank: o.rank, alpha: o.alpha ?? o.rank },
  });
  const output: Value = term.build(aux);
  const feeds = () => {
    const f: Record<string, Tensor> = { ...aux.feeds([]) };
    for (const t of trained) f[t.name] = Tensor.f32(t.shape, t.data);
    return f;
  };
  return { g, trained, output, feeds };
}
