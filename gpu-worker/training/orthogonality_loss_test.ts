import { assert, assertEquals, assertThrows } from "../testing.ts";
import { Rng } from "../random.ts";
import { loraInputNames, type LoraModule } from "../models/layers.ts";
import type { LoraWeights } from "../pipelines/stable_diffusion.ts";
import { orthogonalityLoss } from "./orthogonality_loss.ts";
import { gradcheckAuxLoss } from "./aux_loss_gradcheck.ts";

// A linear and a 3x3 convolution slot (flat factors: in = channels x 9).
const MODULES: LoraModule[] = [
  { path: "a.attn2.to_k", inFeatures: 6, outFeatures: 5, kernel: 0 },
  { path: "b.resnets.0.conv1", inFeatures: 2 * 9, outFeatures: 4, kernel: 3 },
];
const RANK = 2;

function task(name: string, seed: number, rank: number, modules = MODULES): LoraWeights {
  const rng = new Rng(seed);
  return {
    name,
    modules: new Map(modules.map((m) => [m.path, {
      rank,
      down: rng.normal(rank * m.inFeatures),
      up: rng.normal(m.outFeatures * rank),
    }])),
  };
}

/** mean |X^T Y| for X [n, a], Y [n, b] row-major, on the host in float64. */
function meanAbsInner(x: Float32Array, y: Float32Array, n: number, a: number, b: number): number {
  let s = 0;
  for (let i = 0; i < a; i++) {
    for (let j = 0; j < b; j++) {
      let d = 0;
      for (let k = 0; k < n; k++) d += x[k * a + i] * y[k * b + j];
      s += Math.abs(d);
    }
  }
  return s / (a * b);
}

Deno.test("orthogonalityLoss: sum over layers and previous tasks of mean |U_g^T U_i|, gradients match finite differences", async () => {
  // The second task has another rank and lacks the conv layer: that pair adds nothing.
  const previous = [task("t1", 1, 2), task("t2", 2, 3, MODULES.slice(0, 1))];
  const r = await gradcheckAuxLoss(orthogonalityLoss({ previous }), {
    modules: MODULES,
    rank: RANK,
    seed: 3,
  });
  assert(r.ok, r.report);
  const factor = (path: string) => r.trained.find((t) => t.name === loraInputNames(path).up)!.data;
  let expected = 0;
  for (const m of MODULES) {
    for (const t of previous) {
      const w = t.modules.get(m.path);
      if (w) expected += meanAbsInner(factor(m.path), w.up, m.outFeatures, RANK, w.rank);
    }
  }
  assert(Math.abs(r.value - expected) < 1e-5 * expected, `value ${r.value} vs ${expected}`);
  // Only up factors take part (the default): the down factors' gradients are zero.
  const down = r.inputs.find((x) => x.input === loraInputNames(MODULES[0].path).down)!;
  const up = r.inputs.find((x) => x.input === loraInputNames(MODULES[0].path).up)!;
  assertEquals(down.gradRms, 0);
  assert(up.gradRms > 0);
});

Deno.test("orthogonalityLoss: the paper's form on the down factors, mean |D_g D_i^T|", async () => {
  const previous = [task("t1", 4, 3)];
  const r = await gradcheckAuxLoss(orthogonalityLoss({ previous, factor: "down", name: "ortho" }), {
    modules: MODULES,
    rank: RANK,
    seed: 5,
  });
  assert(r.ok, r.report);
  let expected = 0;
  for (const m of MODULES) {
    const d = r.trained.find((t) => t.name === loraInputNames(m.path).down)!.data;
    const p = previous[0].modules.get(m.path)!.down;
    let s = 0;
    for (let i = 0; i < RANK; i++) {
      for (let j = 0; j < 3; j++) {
        let dot = 0;
        for (let k = 0; k < m.inFeatures; k++) dot += d[i * m.inFeatures + k] * p[j * m.inFeatures + k];
        s += Math.abs(dot);
      }
    }
    expected += s / (RANK * 3);
  }
  assert(Math.abs(r.value - expected) < 1e-5 * expected, `value ${r.value} vs ${expected}`);
  assertEquals(r.inputs.find((x) => x.input === loraInputNames(MODULES[1].path).up)!.gradRms, 0);
});

Deno.test("orthogonalityLoss: bad options and mismatched previous factors are refused", async () => {
  assertThrows(
    () => orthogonalityLoss({ previous: [], factor: "left" as "up" }),
    RangeError,
    '"up" or "down"',
  );
  const bad = task("short", 1, 2);
  bad.modules.get(MODULES[0].path)!.up = new Float32Array(3);
  let error: unknown;
  try {
    await gradcheckAuxLoss(orthogonalityLoss({ previous: [bad] }), { modules: MODULES, rank: RANK });
  } catch (e) {
    error = e;
  }
  assert(
    error instanceof RangeError && /up has 3 values, expected \[5,2\]/.test(error.message),
    String(error),
  );
});
