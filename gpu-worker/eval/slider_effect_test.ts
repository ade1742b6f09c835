import { assert, assertEquals, assertThrows } from "../testing.ts";
import { pixelDistance, spearman } from "./slider_effect.ts";

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
