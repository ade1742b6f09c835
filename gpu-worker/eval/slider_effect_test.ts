import { assert, assertEquals, assertThrows } from "../testing.ts";
import { backgroundLuminance, objectSize, pixelDistance, spearman } from "./slider_effect.ts";
import { renderScene } from "../shapesworld/render.ts";
import { sampleScene } from "../shapesworld/world.ts";
import { Rng } from "../random.ts";

Deno.test("spearman: monotonic is 1, reversed -1, ties share ranks, constant is 0, bad input refused", () => {
  assertEquals(spearman([1, 2, 3, 4], [10, 20, 30, 400]), 1);
  assertEquals(spearman([1, 2, 3, 4], [4, 3, 2, 1]), -1);
  assert(Math.abs(spearman([1, 2, 3, 4, 5], [1, 2, 2, 4, 5]) - 0.9747) < 1e-4);
  assertEquals(spearman([1, 2, 3], [5, 5, 5]), 0);
  assertThrows(() => spearman([1], [1]), RangeError);
});

Deno.test("pixelDistance is 0 for equal images and 1 for black against white", () => {
  const black = { width: 2, height: 1, rgb: new Uint8Array(6) };
  const white = { width: 2, height: 1, rgb: new Uint8Array(6).fill(255) };
  assertEquals(pixelDistance(black, black), 0);
  assertEquals(pixelDistance(black, white), 1);
});

Deno.test("objectSize follows the rendered object's size; backgroundLuminance reads the border", () => {
  const sizes = (["small", "medium", "large"] as const).map((size) => {
    const scene = sampleScene(new Rng(4), {
      objectCount: 1,
      shapes: ["square"],
      sizes: [size],
      colours: ["red"],
      textures: ["plain"],
      backgrounds: ["white"],
    });
    const img = renderScene(scene);
    return { measured: objectSize(img), radius: scene.objects[0].radius, bg: backgroundLuminance(img) };
  });
  // The square root of the area scales with the drawn radius: large / small as the radii, within 10%.
  const ratio = (sizes[2].measured / sizes[0].measured) / (sizes[2].radius / sizes[0].radius);
  assert(
    sizes[0].measured < sizes[1].measured && sizes[1].measured < sizes[2].measured,
    JSON.stringify(sizes),
  );
  assert(Math.abs(ratio - 1) < 0.1, `size ratio against the radii: ${ratio}`);
  for (const s of sizes) assert(s.bg > 0.9, `white background luminance ${s.bg}`);
  const blank = { width: 8, height: 8, rgb: new Uint8Array(8 * 8 * 3) };
  assertEquals([objectSize(blank), backgroundLuminance(blank)], [0, 0]);
});
