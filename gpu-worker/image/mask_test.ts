import { assertEquals, assertThrows } from "../testing.ts";
import { encode } from "fast-png";
import { decodeMask, maskFromImage, maskOnGrid, repaintShare } from "./mask.ts";
import { encodePng } from "./png.ts";

/** A 4x2 RGBA PNG: the left column pair opaque black, the right pair transparent (OpenAI's mask). */
function rgbaPng(alpha: (x: number) => number): Uint8Array {
  const data = new Uint8Array(4 * 2 * 4);
  for (let p = 0; p < 8; p++) data.set([0, 0, 0, alpha(p % 4)], p * 4);
  return encode({ width: 4, height: 2, data, channels: 4, depth: 8 });
}

Deno.test("a mask with transparency repaints where alpha < 0.5, whatever its colours", () => {
  const m = decodeMask(rgbaPng((x) => (x < 2 ? 255 : x === 2 ? 100 : 0)), "mask");
  assertEquals([m.width, m.height], [4, 2]);
  assertEquals(Array.from(m.repaint), [0, 0, 1, 1, 0, 0, 1, 1]);
});

Deno.test("an opaque mask repaints where it is light (white repaints, black keeps)", () => {
  const rgb = new Uint8Array([255, 255, 255, 0, 0, 0, 128, 128, 128, 127, 127, 127]);
  const img = { width: 4, height: 1, rgb };
  assertEquals(Array.from(maskFromImage(img).repaint), [1, 0, 1, 0]);
  // The same through a PNG, and an RGBA PNG that is fully opaque reads its luminance too.
  assertEquals(Array.from(decodeMask(encodePng(img), "mask").repaint), [1, 0, 1, 0]);
  assertEquals(Array.from(decodeMask(rgbaPng(() => 255), "mask").repaint), Array(8).fill(0));
  assertEquals(repaintShare(maskFromImage(img)), 0.5);
});

Deno.test("decodeMask names its source on unreadable bytes", () => {
  assertThrows(() => decodeMask(new Uint8Array([1, 2, 3]), "input.mask"), Error, "input.mask");
});

Deno.test("maskOnGrid samples each cell's centre pixel", () => {
  // 8x4 mask, right half repainted: on a 4x2 grid, the right two cells of each row.
  const repaint = new Uint8Array(32).map((_, i) => (i % 8 >= 4 ? 1 : 0));
  const m = { width: 8, height: 4, repaint };
  assertEquals(Array.from(maskOnGrid(m, 2, 4)), [0, 0, 1, 1, 0, 0, 1, 1]);
  // Upsampling repeats pixels.
  assertEquals(Array.from(maskOnGrid({ width: 2, height: 1, repaint: new Uint8Array([1, 0]) }, 1, 4)), [
    1,
    1,
    0,
    0,
  ]);
});
