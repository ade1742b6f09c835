import { assert } from "../testing.ts";
import { SHAPE_HALF_EXTENT, SHAPE_INSIDE } from "./shapes.ts";
import { SHAPES } from "./world.ts";

Deno.test("shapes: each unrotated box is centred, its larger half-side 1, as SHAPE_HALF_EXTENT says", () => {
  const n = 600;
  for (const shape of SHAPES) {
    let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
    let area = 0;
    for (let i = 0; i <= n; i++) {
      for (let j = 0; j <= n; j++) {
        const x = -1.2 + (2.4 * i) / n;
        const y = -1.2 + (2.4 * j) / n;
        if (!SHAPE_INSIDE[shape](x, y)) continue;
        area++;
        [x0, x1, y0, y1] = [Math.min(x0, x), Math.max(x1, x), Math.min(y0, y), Math.max(y1, y)];
      }
    }
    const [hx, hy] = SHAPE_HALF_EXTENT[shape];
    const tol = 0.01;
    assert(Math.abs(x0 + hx) < tol && Math.abs(x1 - hx) < tol, `${shape} x: [${x0}, ${x1}] vs ${hx}`);
    assert(Math.abs(y0 + hy) < tol && Math.abs(y1 - hy) < tol, `${shape} y: [${y0}, ${y1}] vs ${hy}`);
    assert(Math.abs(Math.max(hx, hy) - 1) < 1e-9, shape);
    // Every shape is substantial: at least a fifth of its box.
    assert(area / ((n / 2.4) ** 2 * 4 * hx * hy) > 0.2, `${shape} is too thin`);
  }
  assert(!SHAPE_INSIDE.ring(0, 0) && SHAPE_INSIDE.ring(0.8, 0));
  assert(!SHAPE_INSIDE.crescent(0.5, 0) && SHAPE_INSIDE.crescent(-0.7, 0));
});
