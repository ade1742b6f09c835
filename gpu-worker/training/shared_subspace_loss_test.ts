import { assert, assertEquals } from "../testing.ts";
import { Rng } from "../random.ts";
import { loraInputNames, type LoraModule } from "../models/layers.ts";
import type { LoraWeights } from "../pipelines/stable_diffusion.ts";
import { sharedSubspaceLoss } from "./shared_subspace_loss.ts";
import { gradcheckAuxLoss } from "./aux_loss_gradcheck.ts";

const MODULES: LoraModule[] = [
  { path: "a.attn2.to_v", inFeatures: 6, outFeatures: 5, kernel: 0 },
  { path: "b.resnets.0.conv2", inFeatures: 2 * 9, outFeatures: 3, kernel: 3 },
];
const RANK = 2, ALPHA = 1, DIM = 3;
// R2 is a polynomial of degree 4 in the factors, H and W*, where the five-point stencil is exact: large steps
// keep float32 round-off of the loss (its parts nearly cancel) far below the differences.
const STEP = 2 ** -2;

function task(name: string, seed: number, rank: number, alpha: number, modules = MODULES): LoraWeights {
  const rng = new Rng(seed);
  return {
    name,
    alpha,
    modules: new Map(modules.map((m) => [m.path, {
      rank,
      down: rng.normal(rank * m.inFeatures),
      up: rng.normal(m.outFeatures * rank),
    }])),
  };
}

/** ||c U D - H W||_F^2 formed explicitly, in float64: U [o, r], D [r, i], H [o, s], W [s, i]. */
function residual(
  U: Float32Array,
  D: Float32Array,
  c: number,
  H: Float32Array,
  W: Float32Array,
  [o, r, i, s]: number[],
): number {
  let sum = 0;
  for (let a = 0; a < o; a++) {
    for (let b = 0; b < i; b++) {
      let dw = 0, fit = 0;
      for (let k = 0; k < r; k++) dw += U[a * r + k] * D[k * i + b];
      for (let k = 0; k < s; k++) fit += H[a * s + k] * W[k * i + b];
      sum += (c * dw - fit) ** 2;
    }
  }
  return sum;
}

/** Random non-zero start values for every H and W* (H's own start is zero, flat for some checks). */
function randomState(previous: number): Map<string, Float32Array> {
  const rng = new Rng(21);
  const state = new Map<string, Float32Array>();
  for (const m of MODULES) {
    state.set(`cidm.shared.${m.path}.subspace`, rng.normal(DIM * m.inFeatures, 0.5));
    for (let t = 0; t <= previous; t++) {
      state.set(`cidm.shared.${m.path}.projection.task${t}`, rng.normal(m.outFeatures * DIM, 0.5));
    }
  }
  return state;
}

Deno.test("sharedSubspaceLoss: R2 from the factors equals the explicit sum of ||dW_i - H_i W*||^2; gradients of factors, H and W* match finite differences", async () => {
  // Task 2 (rank 3, alpha 3) lacks the conv layer: no projection, no part there.
  const previous = [task("t1", 1, 2, 1), task("t2", 2, 3, 3, MODULES.slice(0, 1))];
  const state = randomState(2);
  state.delete(`cidm.shared.${MODULES[1].path}.projection.task1`);
  const r = await gradcheckAuxLoss(sharedSubspaceLoss({ previous, weight: 1, dim: DIM, state }), {
    modules: MODULES,
    rank: RANK,
    alpha: ALPHA,
    seed: 4,
    eps: STEP,
  });
  assert(r.ok, r.report);
  const names = r.trained.map((t) => t.name);
  assertEquals(names.filter((n) => n.startsWith("cidm.shared.")).length, 2 + 3 + 2);
  assert(!names.includes(`cidm.shared.${MODULES[1].path}.projection.task1`));
  const get = (name: string) => r.trained.find((t) => t.name === name)!.data;
  let expected = 0;
  for (const m of MODULES) {
    const W = get(`cidm.shared.${m.path}.subspace`);
    const dims = (rank: number) => [m.outFeatures, rank, m.inFeatures, DIM];
    previous.forEach((t, i) => {
      const w = t.modules.get(m.path);
      if (!w) return;
      const H = get(`cidm.shared.${m.path}.projection.task${i}`);
      expected += residual(w.up, w.down, t.alpha! / w.rank, H, W, dims(w.rank));
    });
    const n = loraInputNames(m.path);
    const H = get(`cidm.shared.${m.path}.projection.task2`);
    expected += residual(get(n.up), get(n.down), ALPHA / RANK, H, W, dims(RANK));
  }
  assert(Math.abs(r.value - expected) < 1e-4 * expected, `value ${r.value} vs ${expected}`);
  for (const x of r.inputs) assert(x.gradRms > 0, `${x.input}: zero gradient`);
  // The arrays the term trained are the state's: the caller sees the optimizer's updates.
  assert(
    state.get(`cidm.shared.${MODULES[0].path}.subspace`) === get(`cidm.shared.${MODULES[0].path}.subspace`),
  );
});

Deno.test("sharedSubspaceLoss: a set with train off is a constant input; missing state starts seeded (H = 0)", async () => {
  const previous = [task("t1", 1, 2, 1)];
  const state = new Map<string, Float32Array>();
  const r = await gradcheckAuxLoss(
    sharedSubspaceLoss({ previous, weight: 1, state, train: { subspace: false }, seed: 9 }),
    { modules: MODULES, rank: RANK, alpha: ALPHA, eps: STEP },
  );
  assert(r.ok, r.report);
  const names = r.trained.map((t) => t.name);
  assert(!names.some((n) => n.endsWith(".subspace")), "W* is not trained");
  assertEquals(names.filter((n) => n.includes(".projection.")).length, 4);
  // Default dim: the LoRA rank; H starts at zero, W* random with rms about 1/sqrt(in).
  const W = state.get(`cidm.shared.${MODULES[0].path}.subspace`)!;
  assertEquals(W.length, RANK * MODULES[0].inFeatures);
  assert(W.some((x) => x !== 0));
  assert(state.get(`cidm.shared.${MODULES[0].path}.projection.task0`)!.every((x) => x === 0));
  const again = new Map<string, Float32Array>();
  await gradcheckAuxLoss(sharedSubspaceLoss({ previous, weight: 1, state: again, seed: 9 }), {
    modules: MODULES,
    rank: RANK,
    eps: STEP,
  });
  assertEquals([...again.get(`cidm.shared.${MODULES[0].path}.subspace`)!], [...W], "seeded start");
});
