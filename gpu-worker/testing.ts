/**
 * Assertions for tests (JSR's @std/assert is unreachable here, so the few we need live in the project).
 */
export class AssertionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "AssertionError";
  }
}

export function assert(cond: unknown, msg = "assertion failed"): asserts cond {
  if (!cond) throw new AssertionError(msg);
}

export function assertEquals<T>(actual: T, expected: T, msg?: string): void {
  const a = JSON.stringify(actual, replacer);
  const e = JSON.stringify(expected, replacer);
  if (a !== e) throw new AssertionError(`${msg ? msg + ": " : ""}expected ${e}, got ${a}`);
}

function replacer(_k: string, v: unknown) {
  if (typeof v === "bigint") return `${v}n`;
  if (ArrayBuffer.isView(v)) return Array.from(v as unknown as ArrayLike<number>);
  return v;
}

export function assertThrows<E extends Error>(
  fn: () => unknown,
  // deno-lint-ignore no-explicit-any
  Ctor: new (...args: any[]) => E = Error as any,
  includes?: string,
): E {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof Ctor)) {
      throw new AssertionError(`expected ${Ctor.name}, got ${(e as Error)?.name}: ${e}`);
    }
    if (includes && !(e as Error).message.includes(includes)) {
      throw new AssertionError(`expected message to include "${includes}", got "${(e as Error).message}"`);
    }
    return e;
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
