/**
 * The test helpers themselves: assertEquals tells apart what JSON.stringify made equal, and keeps the
 * `msg: expected ..., got ...` message; assertThrows/assertRejects fail when nothing (or the wrong error) is thrown.
 */
import { assertEquals, AssertionError, assertRejects, assertThrows, seedsFromEnv } from "./testing.ts";

/** Fails unless `assertEquals(a, b)` throws. */
function differs(a: unknown, b: unknown, what: string): AssertionError {
  try {
    assertEquals(a, b, what);
  } catch (e) {
    if (!(e instanceof AssertionError)) throw e;
    return e;
  }
  throw new Error(`${what}: assertEquals found them equal`);
}

Deno.test("assertEquals: values that JSON.stringify confuses differ", () => {
  differs(NaN, null, "NaN vs null");
  differs(Infinity, null, "Infinity vs null");
  differs(Infinity, NaN, "Infinity vs NaN");
  differs(-Infinity, Infinity, "-Infinity vs Infinity");
  differs(-0, 0, "-0 vs 0");
  differs([-0], [0], "-0 in an array");
  differs(new Float32Array([-0]), new Float32Array([0]), "-0 in a Float32Array");
  differs(new Float32Array([NaN]), new Float32Array([Infinity]), "NaN vs Infinity in a Float32Array");
  differs(new Map([["a", 1]]), {}, "a Map vs {}");
  differs(new Map([["a", 1]]), new Map([["a", 2]]), "Maps by entries");
  differs(new Set([1]), new Set([2]), "Sets by members");
  differs(new Set([1]), {}, "a Set vs {}");
  differs(new Uint8Array([1, 2]), [1, 2], "a typed array vs an array");
  differs(new Float32Array([1]), new Float64Array([1]), "Float32Array vs Float64Array");
  differs({ a: 1, b: undefined }, { a: 1 }, "an undefined field vs none");
  differs(1n, 2n, "bigints");
});

Deno.test("assertEquals: equal values pass, NaN equals NaN", () => {
  assertEquals(NaN, NaN);
  assertEquals([1, -0, NaN, -Infinity], [1, -0, NaN, -Infinity]);
  assertEquals(new Float32Array([NaN, -0]), new Float32Array([NaN, -0]));
  assertEquals(new Map([["a", new Set([1])]]), new Map([["a", new Set([1])]]));
  assertEquals({ a: [1, { b: 2n }] }, { a: [1, { b: 2n }] });
});

Deno.test("assertEquals: the message keeps `msg: expected ..., got ...` and names the first difference", () => {
  const e = differs({ x: [1, 2, -0] }, { x: [1, 2, 0] }, "weights");
  assertEquals(
    e.message,
    "weights: expected { x: [ 1, 2, 0 ] }, got { x: [ 1, 2, -0 ] } (first difference at .x[2])",
  );
  assertEquals(differs(NaN, null, "").message, "expected null, got NaN");
  assertEquals(differs("a", "b", "s").message, 's: expected "b", got "a"');
});

Deno.test("assertThrows / assertRejects: fail when nothing or the wrong error is thrown", async () => {
  const none = (() => {
    try {
      assertThrows(() => 1);
    } catch (e) {
      return e;
    }
  })();
  assertEquals((none as Error)?.message, "expected the function to throw");
  const promise = (() => {
    try {
      assertThrows(() => Promise.reject(new Error("later")));
    } catch (e) {
      return e;
    }
  })();
  assertEquals(
    (promise as Error)?.message,
    "expected the function to throw, got a promise (use assertRejects)",
  );
  assertThrows(() => assertThrows(() => 1), AssertionError, "expected the function to throw");
  assertThrows(
    () =>
      assertThrows(() => {
        throw new Error("x");
      }, RangeError),
    AssertionError,
    "expected RangeError, got Error",
  );
  assertThrows(
    () =>
      assertThrows(
        () => {
          throw new RangeError("abc");
        },
        RangeError,
        "xyz",
      ),
    AssertionError,
    'expected message to include "xyz"',
  );
  await assertRejects(
    () => assertRejects(() => Promise.resolve(1)),
    AssertionError,
    "expected the promise to reject",
  );
  await assertRejects(
    () => assertRejects(() => Promise.reject(new TypeError("t")), RangeError),
    AssertionError,
    "expected RangeError, got TypeError",
  );
  const e = await assertRejects(() => Promise.reject(new RangeError("abc")), RangeError, "b");
  assertEquals(e.message, "abc");
});

Deno.test("seedsFromEnv: the fallback when unset, the listed integers when set, a RangeError otherwise", () => {
  const name = "TESTING_TEST_SEEDS";
  Deno.env.delete(name);
  assertEquals(seedsFromEnv(name, [0, 1]), [0, 1]);
  try {
    Deno.env.set(name, "0,1, 2,3");
    assertEquals(seedsFromEnv(name, [0]), [0, 1, 2, 3]);
    for (const bad of ["", "1,,2", "1.5", "-1", "a"]) {
      Deno.env.set(name, bad);
      assertThrows(() => seedsFromEnv(name, [0]), RangeError, `${name} must be comma-separated integers`);
    }
  } finally {
    Deno.env.delete(name);
  }
});
