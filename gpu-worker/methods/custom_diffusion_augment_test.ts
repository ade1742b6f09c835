/**
 * Custom Diffusion augmentation: the size distribution (p = 0.66 small branch), paste vs crop geometry, the
 * shrunk latent mask, the prompt prefixes, the flip, and replay from a seed.
 */
import { assert, assertEquals, assertThrows } from "../testing.ts";
import { Rng } from "../random.ts";
import type { RgbImage } from "../image/png.ts";
import {
  augmentScale,
  customDiffusionAugment,
  LARGE_PREFIXES,
  SMALL_PREFIXES,
} from "./custom_diffusion_augment.ts";

const R = 64, F = 4;

/** A 64x64 image whose left half is white and right half red, so flips and crops are visible. */
function halves(): RgbImage {
  const rgb = new Uint8Array(R * R * 3);
  for (let y = 0; y < R; y++) {
    for (let x = 0; x < R; x++) rgb.set(x < R / 2 ? [255, 255, 255] : [255, 0, 0], (y * R + x) * 3);
  }
  return { width: R, height: R, rgb };
}

Deno.test("augmentScale: 66% in [size/3, size], the rest in [1.2 size, 1.4 size)", () => {
  const rng = new Rng(3);
  let small = 0;
  const n = 4000;
  for (let i = 0; i < n; i++) {
    const s = augmentScale(R, true, rng);
    if (s <= R) {
      small++;
      assert(s >= Math.floor(R / 3), `small branch ${s}`);
    } else assert(s >= Math.floor(1.2 * R) && s < Math.floor(1.4 * R), `large branch ${s}`);
  }
  assert(Math.abs(small / n - 0.66) < 0.03, `small fraction ${small / n}`);
  assertEquals(augmentScale(R, false, rng), R);
});

Deno.test("paste: zero canvas outside, image inside, mask = pasted latent cells shrunk by one", () => {
  const rng = new Rng(11);
  let pasted = 0, cropped = 0;
  for (let i = 0; i < 200; i++) {
    const ex = customDiffusionAugment(halves(), "a <new1> star", { resolution: R, vaeScaleFactor: F }, rng);
    const lh = R / F;
    if (ex.scale <= R) {
      pasted++;
      // Outside the pasted square: exactly 0 in every channel.
      for (let y = 0; y < R; y++) {
        for (let x = 0; x < R; x++) {
          const inside = y >= ex.top && y < ex.top + ex.scale && x >= ex.left && x < ex.left + ex.scale;
          if (!inside) { for (let c = 0; c < 3; c++) assertEquals(ex.image[c * R * R + y * R + x], 0); }
        }
      }
      // The pasted image's top-left pixel is white (left half): 1 in every channel.
      assertEquals(ex.image[ex.top * R + ex.left], 1);
      const r0 = Math.floor(ex.top / F) + 1, r1 = Math.floor((ex.top + ex.scale) / F) - 1;
      const c0 = Math.floor(ex.left / F) + 1, c1 = Math.floor((ex.left + ex.scale) / F) - 1;
      let ones = 0;
      for (let r = 0; r < lh; r++) {
        for (let c = 0; c < lh; c++) {
          const want = r >= r0 && r < r1 && c >= c0 && c < c1 ? 1 : 0;
          assertEquals(
            ex.mask[r * lh + c],
            want,
            `mask cell ${r},${c} for scale ${ex.scale} at ${ex.top},${ex.left}`,
          );
          ones += want;
        }
      }
      assert(ones > 0, `scale ${ex.scale}: empty mask`);
      // Every masked cell lies inside the pasted area.
      assert(r0 * F >= ex.top && r1 * F <= ex.top + ex.scale);
      if (ex.scale < 0.6 * R) {
        assert(SMALL_PREFIXES.some((p) => ex.prompt === p + "a <new1> star"), ex.prompt);
      } else assertEquals(ex.prompt, "a <new1> star");
    } else {
      cropped++;
      assert(ex.mask.every((v) => v === 1), "a crop trains everywhere");
      assert(LARGE_PREFIXES.some((p) => ex.prompt === p + "a <new1> star"), ex.prompt);
      assert(ex.image.every((v) => v === 1 || v === -1 || (v > -1 && v < 1)));
    }
  }
  assert(pasted > 100 && cropped > 40, `pasted ${pasted}, cropped ${cropped}`);
});

Deno.test("no augmentation: the image as is, the mask still shrunk by one cell, the prompt unchanged", () => {
  const ex = customDiffusionAugment(halves(), "p", {
    resolution: R,
    vaeScaleFactor: F,
    augment: false,
  }, new Rng(1));
  assertEquals(ex.scale, R);
  assertEquals(ex.prompt, "p");
  assertEquals(ex.image[0], 1); // white, top left
  assertEquals(ex.image[R - 1], 1); // red channel of a red pixel
  assertEquals(ex.image[R * R + R - 1], -1); // green channel of a red pixel
  const lh = R / F;
  assertEquals(ex.mask.reduce((a, b) => a + b, 0), (lh - 2) * (lh - 2));
});

Deno.test("hflip mirrors about half the time; the same seed replays the same example", () => {
  let flips = 0;
  const rng = new Rng(5);
  for (let i = 0; i < 400; i++) {
    const ex = customDiffusionAugment(halves(), "p", {
      resolution: R,
      vaeScaleFactor: F,
      augment: false,
      hflip: true,
    }, rng);
    if (ex.flipped) {
      flips++;
      assertEquals(ex.image[R * R], -1, "flipped: the top-left pixel is red (green channel -1)");
    } else assertEquals(ex.image[R * R], 1);
  }
  assert(Math.abs(flips / 400 - 0.5) < 0.08, `flip rate ${flips / 400}`);
  const a = customDiffusionAugment(
    halves(),
    "p",
    { resolution: R, vaeScaleFactor: F, hflip: true },
    new Rng(9),
  );
  const b = customDiffusionAugment(
    halves(),
    "p",
    { resolution: R, vaeScaleFactor: F, hflip: true },
    new Rng(9),
  );
  assertEquals([a.scale, a.top, a.left, a.prompt, a.flipped], [b.scale, b.top, b.left, b.prompt, b.flipped]);
  assertEquals(a.image, b.image);
});

Deno.test("wrong sizes are refused with what was expected", () => {
  const small: RgbImage = { width: 32, height: 32, rgb: new Uint8Array(32 * 32 * 3) };
  assertThrows(
    () => customDiffusionAugment(small, "p", { resolution: R, vaeScaleFactor: F }, new Rng(1)),
    RangeError,
    "64x64",
  );
  assertThrows(
    () => customDiffusionAugment(halves(), "p", { resolution: R, vaeScaleFactor: 5 }, new Rng(1)),
    RangeError,
    "dividing 64",
  );
});
