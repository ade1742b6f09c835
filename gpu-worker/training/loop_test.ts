import { assert, assertEquals, assertRejects } from "../testing.ts";
import { Rng } from "../random.ts";
import { latestCheckpoint, listCheckpoints } from "./checkpoint.ts";
import {
  EpochSampler,
  type GradientFn,
  type ProgressEvent,
  runTraining,
  type TrainableParam,
  TrainingDivergedError,
  type TrainingOptions,
} from "./loop.ts";
import { CheckpointError } from "./checkpoint.ts";

// Toy model: y = W x + b (W 2x3, b 2) on 16 fixed samples, mean squared error with analytic gradients.
const N = 16, IN = 3, OUT = 2;
const data = (() => {
  const r = new Rng(7);
  const trueW = [0.5, -1, 2, 1.5, 0.25, -0.75], trueB = [0.3, -0.2];
  const xs = Array.from({ length: N }, () => Array.from(r.normal(IN)));
  const ys = xs.map((x) =>
    [0, 1].map((o) => trueB[o] + x.reduce((s, xi, i) => s + trueW[o * IN + i] * xi, 0))
  );
  return { xs, ys };
})();

function toyParams(): TrainableParam[] {
  return [
    { name: "W", shape: [OUT, IN], data: new Float32Array(OUT * IN).fill(0.1) },
    { name: "b", shape: [OUT], data: new Float32Array(OUT), weightDecay: false },
  ];
}

/** Gradients of mean_i ||W x_i + b - (y_i + noise * eps_i)||^2 over the micro-batch, eps from its rng. */
function toyGradients(params: TrainableParam[], noise = 0.05, scale = 1): GradientFn {
  const [W, b] = params;
  return ({ indices, rng }) => {
    const gW = new Float64Array(OUT * IN), gb = new Float64Array(OUT);
    let loss = 0;
    for (const idx of indices) {
      const x = data.xs[idx], eps = rng.normal(OUT);
      for (let o = 0; o < OUT; o++) {
        let pred = b.data[o];
        for (let i = 0; i < IN; i++) pred += W.data[o * IN + i] * x[i];
        const r = pred - (data.ys[idx][o] + noise * eps[o]);
        loss += r * r / indices.length;
        gb[o] += 2 * r / indices.length;
        for (let i = 0; i < IN; i++) gW[o * IN + i] += 2 * r * x[i] / indices.length;
      }
    }
    return Promise.resolve({
      loss,
      grads: { W: Float32Array.from(gW, (g) => g * scale), b: Float32Array.from(gb, (g) => g * scale) },
    });
  };
}

function options(params: TrainableParam[], extra: Partial<TrainingOptions> = {}): TrainingOptions {
  return {
    params,
    gradients: toyGradients(params),
    datasetSize: N,
    steps: 20,
    batchSize: 3,
    seed: 11,
    optimizer: { lr: 0.05 },
    ...extra,
  };
}

async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir();
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function assertBitEqual(a: ArrayLike<number>, b: ArrayLike<number>, what: string) {
  assertEquals(a.length, b.length, what);
  for (let i = 0; i < a.length; i++) assert(Object.is(a[i], b[i]), `${what}[${i}]: ${a[i]} vs ${b[i]}`);
}

Deno.test("the toy regression's loss decreases", async () => {
  const params = toyParams();
  const { losses, steps } = await runTraining(options(params, { steps: 300, batchSize: 4 }));
  assertEquals(steps, 300);
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const first = mean(losses.slice(0, 10)), last = mean(losses.slice(-10));
  assert(last < 0.05 * first, `loss ${first} -> ${last}`);
});

Deno.test("the data order covers every sample once per epoch and does not depend on history", () => {
  const s = new EpochSampler(5, 10);
  const epoch1 = s.indices(10, 10);
  assertEquals([...epoch1].sort((a, b) => a - b), [...Array(10).keys()]);
  assert(s.indices(0, 10).join() !== epoch1.join(), "epochs are reshuffled");
  assertEquals(new EpochSampler(5, 10).indices(13, 9), s.indices(13, 9));
  assertEquals(s.indices(8, 4), [...s.indices(8, 2), ...s.indices(10, 2)], "batches straddle epochs");
});

Deno.test("interrupted at step 10 and resumed equals the uninterrupted 20-step run bit for bit", async () => {
  const common = {
    steps: 20,
    gradientAccumulationSteps: 2,
    maxGradNorm: 0.5,
    lrSchedule: { name: "cosine" as const, warmupSteps: 3 },
    optimizer: { lr: 0.05, weightDecay: 0.1 },
  };
  await withTempDir(async (root) => {
    const full = toyParams();
    const a = await runTraining(
      options(full, { ...common, checkpoint: { dir: `${root}/a`, every: 5, keep: 2 } }),
    );
    assertEquals(a.steps, 20);
    assertEquals((await listCheckpoints(`${root}/a`)).map((c) => c.step), [15, 20]);

    // Interrupted by cancellation at step 10 ...
    const ck = { dir: `${root}/b`, every: 5, keep: 2 };
    const ctl = new AbortController();
    const first = toyParams();
    const err = await assertRejects(
      () =>
        runTraining(options(first, {
          ...common,
          checkpoint: ck,
          signal: ctl.signal,
          onProgress: (e) => e.step === 10 && ctl.abort(),
        })),
      DOMException,
    );
    assertEquals(err.name, "AbortError");
    assertEquals(await latestCheckpoint(ck.dir), `${ck.dir}/checkpoint-10.safetensors`);
    // ... then by a crash inside step 13 ...
    const crashed = toyParams();
    const crashing = toyGradients(crashed);
    await assertRejects(
      () =>
        runTraining(options(crashed, {
          ...common,
          checkpoint: ck,
          resume: true,
          gradients: (mb) => mb.step === 13 ? Promise.reject(new Error("worker died")) : crashing(mb),
        })),
      Error,
      "worker died",
    );
    // ... and resumed from fresh parameter objects.
    const resumed = toyParams();
    const b = await runTraining(options(resumed, { ...common, checkpoint: ck, resume: true }));
    assertEquals(b.resumedFrom, 10);
    assertEquals(b.steps, 20);
    assertBitEqual(b.losses, a.losses, "losses");
    for (let i = 0; i < full.length; i++) assertBitEqual(resumed[i].data, full[i].data, full[i].name);
    assertEquals((await listCheckpoints(ck.dir)).map((c) => c.step), [15, 20]);
  });
});

Deno.test("2 micro-batches of 2 equal one batch of 4", async () => {
  const big = toyParams(), small = toyParams();
  const seen: number[][] = [[], []];
  const record = (k: number, fn: GradientFn): GradientFn => (mb) => {
    seen[k].push(...mb.indices);
    return fn(mb);
  };
  const a = await runTraining(
    options(big, { steps: 12, batchSize: 4, gradients: record(0, toyGradients(big, 0)) }),
  );
  const b = await runTraining(
    options(small, {
      steps: 12,
      batchSize: 2,
      gradientAccumulationSteps: 2,
      gradients: record(1, toyGradients(small, 0)),
    }),
  );
  assertEquals(seen[1], seen[0]);
  for (let i = 0; i < 12; i++) {
    assert(Math.abs(a.losses[i] - b.losses[i]) <= 1e-6 * Math.abs(a.losses[i]), `step ${i + 1} loss`);
  }
  for (let i = 0; i < big.length; i++) {
    for (let j = 0; j < big[i].data.length; j++) assert(Math.abs(big[i].data[j] - small[i].data[j]) < 1e-5);
  }
});

Deno.test("clipping caps the gradient the optimizer sees; progress reports the pre-clip norm", async () => {
  // With eps = 1, AdamW's first step is lr * g / (|g| + 1): it shows the gradient's magnitude.
  const run = async (maxGradNorm?: number) => {
    const w: TrainableParam = { name: "w", shape: [1], data: Float32Array.of(0) };
    const events: ProgressEvent[] = [];
    await runTraining({
      params: [w],
      gradients: () => Promise.resolve({ loss: 1, grads: { w: Float32Array.of(1000) } }),
      datasetSize: 1,
      steps: 1,
      batchSize: 1,
      seed: 0,
      optimizer: { lr: 1, eps: 1, weightDecay: 0 },
      maxGradNorm,
      onProgress: (e) => events.push(e),
    });
    return { w: w.data[0], norm: events[0].gradNorm };
  };
  const clipped = await run(1), free = await run();
  assertEquals(clipped.norm, 1000);
  assert(Math.abs(clipped.w + 0.5) < 1e-6, `clipped update ${clipped.w}`);
  assert(Math.abs(free.w + 1000 / 1001) < 1e-6, `unclipped update ${free.w}`);
});

Deno.test("a NaN loss at step 7 raises TrainingDivergedError and leaves checkpoint 5 as the latest", async () => {
  await withTempDir(async (dir) => {
    const params = toyParams();
    const inner = toyGradients(params);
    const err = await assertRejects(
      () =>
        runTraining(options(params, {
          checkpoint: { dir, every: 5, keep: 2 },
          gradients: async (mb) => mb.step === 7 ? { ...(await inner(mb)), loss: NaN } : inner(mb),
        })),
      TrainingDivergedError,
      "step 7",
    );
    assertEquals(err.step, 7);
    assertEquals(await latestCheckpoint(dir), `${dir}/checkpoint-5.safetensors`);
    assertEquals((await listCheckpoints(dir)).length, 1);

    const p2 = toyParams();
    const inner2 = toyGradients(p2);
    await assertRejects(
      () =>
        runTraining(options(p2, {
          gradients: async (mb) => {
            const r = await inner2(mb);
            if (mb.step === 3) r.grads.b[1] = Infinity;
            return r;
          },
        })),
      TrainingDivergedError,
      `"b" is not finite`,
    );
  });
});

Deno.test("cancellation stops within a step and checkpoints the last completed one", async () => {
  await withTempDir(async (dir) => {
    const params = toyParams();
    const inner = toyGradients(params);
    const ctl = new AbortController();
    let calls = 0;
    await assertRejects(
      () =>
        runTraining(options(params, {
          gradientAccumulationSteps: 2,
          checkpoint: { dir, every: 100 },
          signal: ctl.signal,
          gradients: (mb) => {
            calls++;
            if (mb.step === 4 && mb.micro === 0) ctl.abort();
            return inner(mb);
          },
        })),
      DOMException,
      "after step 3",
    );
    assertEquals(calls, 7, "3 full steps of 2 micro-batches, then the one that saw the abort");
    assertEquals(await latestCheckpoint(dir), `${dir}/checkpoint-3.safetensors`);

    const pre = new AbortController();
    pre.abort();
    let none = 0;
    await assertRejects(
      () =>
        runTraining(
          options(toyParams(), { signal: pre.signal, gradients: () => (none++, inner({} as never)) }),
        ),
      DOMException,
    );
    assertEquals(none, 0);
  });
});

Deno.test("progress events: lr follows the schedule, steps/s and ETA are finite", async () => {
  const events: ProgressEvent[] = [];
  await runTraining(options(toyParams(), {
    steps: 8,
    lrSchedule: { name: "linear", warmupSteps: 2 },
    optimizer: { lr: 0.1 },
    onProgress: (e) => events.push(e),
  }));
  assertEquals(events.map((e) => e.step), [1, 2, 3, 4, 5, 6, 7, 8]);
  const expected = [0, 0.05, 0.1, 0.1 * 5 / 6, 0.1 * 4 / 6, 0.1 * 3 / 6, 0.1 * 2 / 6, 0.1 / 6];
  events.forEach((e, i) => assert(Math.abs(e.lr - expected[i]) < 1e-12, `lr at step ${i + 1}: ${e.lr}`));
  assert(events.every((e) => e.stepsPerSecond > 0 && Number.isFinite(e.etaSeconds) && e.steps === 8));
  assertEquals(events[7].etaSeconds, 0);
});

Deno.test("checkpoint folders: no silent reuse, mismatched resumes refused", async () => {
  await withTempDir(async (dir) => {
    await runTraining(options(toyParams(), { steps: 3, checkpoint: { dir, every: 2 } }));
    assertEquals((await listCheckpoints(dir)).map((c) => c.step), [2, 3]);
    await assertRejects(
      () => runTraining(options(toyParams(), { checkpoint: { dir, every: 2 } })),
      CheckpointError,
      "resume: true",
    );
    await assertRejects(
      () => runTraining(options(toyParams(), { seed: 12, resume: true, checkpoint: { dir, every: 2 } })),
      CheckpointError,
      "seed 11",
    );
    const wrongShape = toyParams();
    wrongShape[0] = { name: "W", shape: [IN, OUT], data: new Float32Array(6) };
    await assertRejects(
      () => runTraining(options(wrongShape, { resume: true, checkpoint: { dir, every: 2 } })),
      CheckpointError,
      "shape",
    );
    const r = await runTraining(
      options(toyParams(), { steps: 3, resume: true, checkpoint: { dir, every: 2 } }),
    );
    assertEquals([r.steps, r.resumedFrom, r.losses.length], [3, 3, 3]);
  });
});

Deno.test("Rng.derive: a pure function of (seed, keys), distinct per key tuple", () => {
  const a = Rng.derive(1, 2, 3).normal(4), b = Rng.derive(1, 2, 3).normal(4);
  assertEquals(Array.from(a), Array.from(b));
  const firsts = [[1, 2, 3], [1, 2, 4], [1, 3, 2], [2, 2, 3], [1, 23], [1, 2, 3, 0], [1, 2 ** 40, 3]].map((
    k,
  ) => Rng.derive(k[0], ...k.slice(1)).nextU32());
  assertEquals(new Set(firsts).size, firsts.length);
  const r = Rng.derive(9, 0);
  let s = 0;
  for (let i = 0; i < 10000; i++) s += r.uniform();
  assert(Math.abs(s / 10000 - 0.5) < 0.02);
});
