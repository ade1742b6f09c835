import { assert, assertEquals, assertThrows } from "../testing.ts";
import { decodePng, encodePng, imagesToTensor, resizeBilinear, tensorToImages } from "./png.ts";

Deno.test("PNG round trip is exact", () => {
  const rgb = new Uint8Array(5 * 3 * 3).map((_, i) => (i * 37) % 256);
  const img = decodePng(encodePng({ width: 5, height: 3, rgb }));
  assertEquals([img.width, img.height], [5, 3]);
  assertEquals(Array.from(img.rgb), Array.from(rgb));
});

Deno.test("tensor <-> image conversion maps [-1, 1] to [0, 255]", () => {
  const rgb = Uint8Array.from([0, 128, 255, 10, 20, 30]);
  const t = imagesToTensor([{ width: 2, height: 1, rgb }]);
  assertEquals(t.dims, [1, 3, 1, 2]);
  assert(Math.abs(t.f[0] + 1) < 1e-6 && Math.abs(t.f[4] - 1) < 1e-6);
  assertEquals(Array.from(tensorToImages(t)[0].rgb), Array.from(rgb));
});

Deno.test("bilinear resize keeps a constant image constant and halves exactly", () => {
  const rgb = new Uint8Array(8 * 8 * 3).fill(77);
  const r = resizeBilinear({ width: 8, height: 8, rgb }, 3, 5);
  assert(r.rgb.every((v) => v === 77));
  const stripes = new Uint8Array(4 * 1 * 3);
  stripes.set([0, 0, 0, 100, 100, 100, 200, 200, 200, 255, 255, 255]);
  const half = resizeBilinear({ width: 4, height: 1, rgb: stripes }, 2, 1);
  assertEquals(Array.from(half.rgb), [50, 50, 50, 228, 228, 228]);
});

Deno.test("garbage is refused as a PNG", () => {
  assertThrows(() => decodePng(new Uint8Array([1, 2, 3, 4])), SyntaxError, "not a readable PNG");
});
