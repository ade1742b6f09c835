import { assertEquals, assertThrows } from "../testing.ts";
import { objectLatentWeights, objectPixelWeights } from "./object_weights.ts";
import { renderScene } from "./render.ts";
import type { Scene } from "./world.ts";

const scene: Scene = {
  background: "blue",
  objects: [{
    shape: "square",
    colour: "red",
    size: "large",
    position: "center",
    texture: "plain",
    cx: 0.5,
    cy: 0.5,
    radius: 0.3,
    rotation: 0,
    textureAngle: 0,
    texturePhase: 0,
  }],
};

Deno.test("objectPixelWeights: 1 + weight on the object's pixels, 1 on the background", () => {
  const img = renderScene(scene, 32);
  const w = objectPixelWeights([img, img], ["blue", "blue"], 4);
  assertEquals(w.dims, [2, 1, 32, 32]);
  const centre = 16 * 32 + 16, corner = 0;
  assertEquals([w.f[centre], w.f[corner]], [5, 1]);
  const heavy = w.f.subarray(0, 32 * 32).filter((v) => v === 5).length;
  // A large centred square covers a sizeable part of the image, but not all of it.
  assertEquals(heavy > 32 * 32 / 10 && heavy < 32 * 32 / 2, true, `${heavy} object pixels`);
  assertEquals([...new Set(w.f)].sort(), [1, 5]);
});

Deno.test("objectPixelWeights: bad inputs are refused with what was expected", () => {
  const img = renderScene(scene, 16);
  assertThrows(() => objectPixelWeights([img], [], 1), RangeError, "1 images and 0 backgrounds");
  assertThrows(() => objectPixelWeights([img], ["blue"], -1), RangeError, ">= 0, got -1");
  assertThrows(
    () => objectPixelWeights([img, renderScene(scene, 8)], ["blue", "blue"], 1),
    RangeError,
    "8x8",
  );
});

Deno.test("objectLatentWeights: each patch 1 + weight x its object share", () => {
  const img = renderScene(scene, 32);
  const px = objectPixelWeights([img], ["blue"], 4).f;
  const m = objectLatentWeights(img, "blue", 4, 4);
  assertEquals(m.length, 64);
  // Patch (row 2, column 5) by hand.
  let sum = 0;
  for (let y = 8; y < 12; y++) for (let x = 20; x < 24; x++) sum += px[y * 32 + x];
  assertEquals(Math.abs(m[2 * 8 + 5] - sum / 16) < 1e-6, true);
  assertEquals([m[0], m[4 * 8 + 4]], [1, 5]); // a corner patch; a patch inside the square
  assertThrows(() => objectLatentWeights(img, "blue", 4, 5), RangeError, "dividing 32x32");
});
