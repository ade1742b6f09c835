import { assert, assertClose, assertEquals, assertThrows } from "../testing.ts";
import { AdamW, ADAMW_DEFAULTS } from "./optimizer.ts";

Deno.test("AdamW defaults are torch's", () => {
  assertEquals(ADAMW_DEFAULTS, { lr: 1e-3, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 1e-2 });
});

Deno.test("AdamW first step: decay, then lr * g / (|g| + eps), i.e. lr * sign(g) for |g| >> eps", () => {
  const p0 = [1, -2, 0.5, 0.25];
  const g = [0.3, -4, 1e-3, 0];
  const w = Float32Array.from(p0);
  const lr = 0.1, wd = 0.01, eps = 1e-8;
  new AdamW([{ name: "w", data: w }], { lr, weightDecay: wd }).step({ w: Float32Array.from(g) });
  const expected = p0.map((p, i) => p * (1 - lr * wd) - lr * g[i] / (Math.abs(g[i]) + eps));
  assertClose(w, expected, 1e-7);
  assert(Math.abs(w[0] - (1 * 0.999 - 0.1)) < 1e-6 && Math.abs(w[1] - (-2 * 0.999 + 0.1)) < 1e-6);
  assertEquals(w[3], Math.fround(0.25 * 0.999), "zero gradient: only the decay moves it");
});

Deno.test("AdamW second step by hand: bias corrections of m and v", () => {
  // g1 = 1, g2 = -1, no decay: m2 = -0.01, v2 = 0.001999, m_hat = -0.01 / 0.19, v_hat = 1.
  const w = new Float32Array(1);
  const opt = new AdamW([{ name: "w", data: w }], { lr: 0.01, weightDecay: 0 });
  opt.step({ w: Float32Array.of(1) });
  opt.step({ w: Float32Array.of(-1) });
  const expected = -0.01 / (1 + 1e-8) + 0.01 * (0.01 / 0.19) / (1 + 1e-8);
  assert(Math.abs(w[0] - expected) < 1e-8, `${w[0]} vs ${expected}`);
  const s = opt.exportState();
  assert(Math.abs(s.m.w[0] + 0.01) < 1e-8 && Math.abs(s.v.w[0] - 0.001999) < 1e-9);
  assertEquals(s.steps, { w: 2 });
});

Deno.test("AdamW with a constant gradient follows the closed form a^t p0 - lr s (1 - a^t) / (1 - a)", () => {
  const lr = 0.05, wd = 0.1, g = 0.7, p0 = 2;
  const w = Float32Array.of(p0);
  const opt = new AdamW([{ name: "w", data: w }], { lr, weightDecay: wd, betas: [0.8, 0.99] });
  const t = 25;
  for (let i = 0; i < t; i++) opt.step({ w: Float32Array.of(g) });
  const a = 1 - lr * wd, s = g / (g + 1e-8); // m_hat = g and v_hat = g^2 exactly for a constant g
  const expected = a ** t * p0 - lr * s * (1 - a ** t) / (1 - a);
  assert(Math.abs(w[0] - expected) < 1e-5, `${w[0]} vs ${expected}`);
});

Deno.test("AdamW weight-decay opt-out, missing gradients and per-parameter step counts", () => {
  const a = Float32Array.of(1, 1), b = Float32Array.of(1, 1), c = Float32Array.of(5);
  const opt = new AdamW([
    { name: "a", data: a },
    { name: "b", data: b, weightDecay: false },
    { name: "c", data: c },
  ], { lr: 0.1, weightDecay: 0.5 });
  const zero = () => new Float32Array(2);
  opt.step({ a: zero(), b: zero() });
  opt.step({ a: zero(), b: zero() });
  assertClose(a, [0.95 ** 2, 0.95 ** 2], 1e-7);
  assertEquals(Array.from(b), [1, 1]);
  assertEquals(Array.from(c), [5], "no gradient: untouched, not even decayed");
  assertEquals(opt.exportState().steps, { a: 2, b: 2, c: 0 });
  assertThrows(() => opt.step({ d: zero() }), Error, `unknown parameter "d"`);
  assertThrows(() => opt.step({ a: new Float32Array(3) }), RangeError, `"a" has 3 elements`);
});

Deno.test("AdamW state export/import continues bit-identically", () => {
  const grads = (t: number) => ({ w: Float32Array.from([Math.sin(t), Math.cos(3 * t), t / 7 - 0.5]) });
  const full = Float32Array.of(0.3, -0.2, 0.1);
  const optA = new AdamW([{ name: "w", data: full }], { lr: 0.02 });
  for (let t = 0; t < 6; t++) optA.step(grads(t));

  const first = Float32Array.of(0.3, -0.2, 0.1);
  const optB = new AdamW([{ name: "w", data: first }], { lr: 0.02 });
  for (let t = 0; t < 3; t++) optB.step(grads(t));
  const state = optB.exportState();
  const second = first.slice();
  const optC = new AdamW([{ name: "w", data: second }], { lr: 0.02 });
  optC.importState(state);
  for (let t = 3; t < 6; t++) optC.step(grads(t));
  assertEquals(Array.from(second), Array.from(full));
  assertThrows(() => optC.importState({ m: {}, v: {}, steps: {} }), Error, `no entry for parameter "w"`);
});

Deno.test("AdamW refuses bad hyperparameters and duplicate names", () => {
  const w = new Float32Array(1);
  assertThrows(() => new AdamW([{ name: "w", data: w }], { betas: [1, 0.9] }), RangeError, "betas");
  assertThrows(() => new AdamW([{ name: "w", data: w }], { lr: -1 }), RangeError, "learning rate");
  assertThrows(() => new AdamW([{ name: "w", data: w }, { name: "w", data: w }]), Error, "given twice");
});
