import { assertEquals, assertThrows } from "../gpu-worker/testing.ts";
import { FlagError, numberFlag } from "./flags.ts";

Deno.test("numeric flags: missing is undefined, bad values name what was expected and what came", () => {
  assertEquals(numberFlag("steps", undefined), undefined);
  assertEquals(numberFlag("lr", "1e-4"), 1e-4);
  assertEquals(numberFlag("steps", "20", { integer: true, min: 1, max: 500 }), 20);
  assertThrows(() => numberFlag("lr", "fast"), FlagError, '--lr expects a number, got "fast"');
  assertThrows(() => numberFlag("lr", " "), FlagError, "expects a number");
  assertThrows(
    () => numberFlag("steps", "2.5", { integer: true, min: 1, max: 500 }),
    FlagError,
    '--steps expects an integer in 1..500, got "2.5"',
  );
  assertThrows(() => numberFlag("n", "0", { integer: true, min: 1 }), FlagError, "a positive integer");
  assertThrows(() => numberFlag("scale", "11", { min: -10, max: 10 }), FlagError, "a number in -10..10");
});
