import { assert, assertEquals } from "../testing.ts";
import { clipGradNorm, globalGradNorm } from "./grad_clip.ts";

Deno.test("global norm spans all gradients", () => {
  assertEquals(globalGradNorm({ a: Float32Array.of(3), b: Float32Array.of(0, 4) }), 5);
  assertEquals(globalGradNorm([Float32Array.of(1, 1), Float32Array.of(1, 1)]), 2);
});

Deno.test("clipping scales by maxNorm / (norm + 1e-6) above the cap and returns the pre-clip norm", () => {
  const grads = { a: Float32Array.of(3), b: Float32Array.of(0, 4) };
  assertEquals(clipGradNorm(grads, 1), 5);
  const coef = 1 / (5 + 1e-6);
  assert(Math.abs(grads.a[0] - 3 * coef) < 1e-7 && Math.abs(grads.b[1] - 4 * coef) < 1e-7);
  const after = globalGradNorm(grads);
  assert(after <= 1 && after > 1 - 1e-5, `norm after clipping ${after}`);
});

Deno.test("clipping leaves gradients under the cap untouched and reports non-finite norms", () => {
  const grads = { a: Float32Array.of(0.3, -0.4) };
  assertEquals(clipGradNorm(grads, 1), globalGradNorm({ a: Float32Array.of(0.3, -0.4) }));
  assertEquals(Array.from(grads.a), Array.from(Float32Array.of(0.3, -0.4)));
  const bad = { a: Float32Array.of(1, NaN) };
  assert(Number.isNaN(clipGradNorm(bad, 1)));
  assertEquals(bad.a[0], 1);
  assertEquals(clipGradNorm({ a: Float32Array.of(Infinity) }, 1), Infinity);
});
