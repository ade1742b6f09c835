import { assert, assertEquals, assertThrows } from "../testing.ts";
import { Rng } from "../random.ts";
import { classifierFreeGuidance } from "./guidance.ts";

const std = (x: Float32Array) => {
  const m = x.reduce((s, v) => s + v, 0) / x.length;
  return Math.sqrt(x.reduce((s, v) => s + (v - m) ** 2, 0) / (x.length - 1));
};
const close = (a: number, b: number, what: string) =>
  assert(Math.abs(a - b) <= 1e-5 * Math.max(1, Math.abs(b)), `${what}: ${a} vs ${b}`);

Deno.test("classifierFreeGuidance: rescale 0 is uncond + scale * (cond - uncond)", () => {
  const pred = Float32Array.of(1, 2, 3, 4, /* cond */ 2, 2, 1, 0);
  assertEquals([...classifierFreeGuidance(pred, 1, 3)], [4, 2, -3, -8]);
  assertEquals([...classifierFreeGuidance(pred, 2, 1)], [2, 2, 1, 0], "scale 1 is the conditional output");
});

Deno.test("classifierFreeGuidance: rescale 1 gives each sample the conditional output's std; 0.5 mixes", () => {
  const n = 2, per = 64;
  const pred = new Rng(5).normal(2 * n * per);
  const plain = classifierFreeGuidance(pred, n, 6, 0);
  const full = classifierFreeGuidance(pred, n, 6, 1);
  const half = classifierFreeGuidance(pred, n, 6, 0.5);
  for (let s = 0; s < n; s++) {
    const cond = pred.subarray(n * per + s * per, n * per + (s + 1) * per);
    const p = plain.subarray(s * per, (s + 1) * per), f = full.subarray(s * per, (s + 1) * per);
    assert(std(p) > 2 * std(cond), "plain guidance at scale 6 inflates the spread");
    close(std(f), std(cond), `sample ${s}: rescaled std`);
    // Same direction as plain guidance, only shorter.
    close(f[0] / p[0], std(cond) / std(p), `sample ${s}: ratio`);
    for (let i = 0; i < per; i++) close(half[s * per + i], 0.5 * (p[i] + f[i]), `sample ${s} value ${i}`);
  }
});

Deno.test("classifierFreeGuidance: a batch that is not [uncond; cond] x n, or rescale outside 0..1, is refused", () => {
  assertThrows(
    () => classifierFreeGuidance(new Float32Array(6), 2, 5),
    RangeError,
    "2 x 2 samples, got 6 values",
  );
  assertThrows(() => classifierFreeGuidance(new Float32Array(8), 2, 5, 1.5), RangeError, "got 1.5");
});
