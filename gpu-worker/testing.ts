/**
 * Assertions for tests (JSR's @std/assert is unreachable here, so the few we need live in the project).
 */
import { isDeepStrictEqual } from "node:util";

export class AssertionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "AssertionError";
  }
}

export function assert(cond: unknown, msg = "assertion failed"): asserts cond {
  if (!cond) throw new AssertionError(msg);
}

/**
 * Deep strict equality (`node:util`'s `isDeepStrictEqual`, the comparison of `node:assert/strict`'s
 * `deepStrictEqual`): -0 differs from 0, NaN equals only NaN, Infinity is not NaN, Maps and Sets compare by
 * their entries, a typed array equals only a typed array of the same kind and values (not a plain array), a
 * class instance is not a plain object, and `{ a: undefined }` is not `{}`. Compare like with like.
 */
export function assertEquals<T>(actual: T, expected: T, msg?: string): void {
  if (isDeepStrictEqual(actual, expected)) return;
  const where = firstDifference(actual, expected, "");
  throw new AssertionError(
    `${msg ? msg + ": " : ""}expected ${show(expected)}, got ${show(actual)}${
      where ? ` (first difference at ${where})` : ""
    }`,
  );
}

const INSPECT = {
  depth: Infinity,
  iterableLimit: 200,
  compact: true,
  breakLength: Infinity,
  sorted: true,
  strAbbreviateSize: 2000,
} as const;

/** A value as the failure message shows it (Deno.inspect: -0, NaN, Infinity, Map, Set and class names kept). */
function show(v: unknown): string {
  return Deno.inspect(v, INSPECT);
}

/** The path (`[3].name`) of the first place where `a` and `b` differ, or "" where it is not simply found. */
function firstDifference(a: unknown, b: unknown, path: string): string {
  if (isDeepStrictEqual(a, b)) return "";
  const isList = (v: unknown) => Array.isArray(v) || (ArrayBuffer.isView(v) && !(v instanceof DataView));
  if (isList(a) && isList(b)) {
    const x = a as ArrayLike<unknown>, y = b as ArrayLike<unknown>;
    for (let i = 0; i < Math.min(x.length, y.length); i++) {
      if (!isDeepStrictEqual(x[i], y[i])) {
        return firstDifference(x[i], y[i], `${path}[${i}]`) || `${path}[${i}]`;
      }
    }
    return x.length !== y.length ? `${path}.length` : "";
  }
  if (a && b && typeof a === "object" && typeof b === "object" && !isList(a) && !isList(b)) {
    if (a instanceof Map || b instanceof Map || a instanceof Set || b instanceof Set) return "";
    const ka = Object.keys(a), kb = Object.keys(b);
    for (const k of [...new Set([...ka, ...kb])].sort()) {
      const x = (a as Record<string, unknown>)[k], y = (b as Record<string, unknown>)[k];
      if (!(k in a) || !(k in b) || !isDeepStrictEqual(x, y)) {
        return firstDifference(x, y, `${path}.${k}`) || `${path}.${k}`;
      }
    }
  }
  return "";
}

export function assertThrows<E extends Error>(
  fn: () => unknown,
  // deno-lint-ignore no-explicit-any
  Ctor: new (...args: any[]) => E = Error as any,
  includes?: string,
): E {
  let returned: unknown;
  try {
    returned = fn();
  } catch (e) {
    if (!(e instanceof Ctor)) {
      throw new AssertionError(`expected ${Ctor.name}, got ${(e as Error)?.name}: ${e}`);
    }
    if (includes && !(e as Error).message.includes(includes)) {
      throw new AssertionError(`expected message to include "${includes}", got "${(e as Error).message}"`);
    }
    return e;
  }
  if (returned instanceof Promise) {
    returned.catch(() => {});
    throw new AssertionError("expected the function to throw, got a promise (use assertRejects)");
  }
  throw new AssertionError("expected the function to throw");
}

export async function assertRejects<E extends Error>(
  fn: () => Promise<unknown>,
  // deno-lint-ignore no-explicit-any
  Ctor: new (...args: any[]) => E = Error as any,
  includes?: string,
): Promise<E> {
  try {
    await fn();
  } catch (e) {
    if (!(e instanceof Ctor)) {
      throw new AssertionError(`expected ${Ctor.name}, got ${(e as Error)?.name}: ${e}`);
    }
    if (includes && !(e as Error).message.includes(includes)) {
      throw new AssertionError(`expected message to include "${includes}", got "${(e as Error).message}"`);
    }
    return e;
  }
  throw new AssertionError("expected the promise to reject");
}

/** Relative error ||a - b|| / ||b||. */
export function relativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new AssertionError(`length ${a.length} vs ${b.length}`);
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num) / Math.max(Math.sqrt(den), 1e-30);
}

export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tol: number,
  msg = "",
): void {
  const r = relativeError(actual, expected);
  if (!(r <= tol)) throw new AssertionError(`${msg} relative error ${r.toExponential(3)} above ${tol}`);
}

/**
 * Training seeds for an effect test: the comma-separated integers in environment variable `name`, or
 * `fallback` when it is unset; a RangeError naming the variable for anything else.
 *
 * @example
 * ```ts
 * const SEEDS = seedsFromEnv("DB_SEEDS", [0, 1]); // DB_SEEDS=0,1,2,3 re-measures at four seeds
 * ```
 */
export function seedsFromEnv(name: string, fallback: number[]): number[] {
  const raw = Deno.env.get(name);
  if (raw === undefined) return fallback;
  return raw.split(",").map((x) => {
    if (!/^\d+$/.test(x.trim())) {
      throw new RangeError(`${name} must be comma-separated integers, got "${raw}"`);
    }
    return Number(x);
  });
}
