/**
 * Numeric command-line flags, checked the same way by every script: a missing flag is `undefined`, anything
 * else must be a finite number (an integer when asked) inside the bounds, or a `FlagError` says what was
 * expected and what came.
 *
 * @example
 * ```ts
 * numberFlag("steps", "20", { integer: true, min: 1, max: 500 }); // 20
 * numberFlag("guidance", "x"); // throws FlagError: --guidance expects a number, got "x"
 * ```
 */

/** A bad command line (scripts exit 2 on it). */
export class FlagError extends RangeError {
  override name = "FlagError";
}

export function numberFlag(
  name: string,
  v: string | undefined,
  o: { integer?: boolean; min?: number; max?: number } = {},
): number | undefined {
  if (v === undefined) return undefined;
  const x = Number(v);
  const { min = -Infinity, max = Infinity } = o;
  const ok = v.trim() !== "" && (o.integer ? Number.isInteger(x) : Number.isFinite(x)) && x >= min &&
    x <= max;
  if (!ok) {
    const kind = o.integer
      ? (min === 1 && max === Infinity ? "a positive integer" : "an integer")
      : "a number";
    const range = Number.isFinite(min) && Number.isFinite(max) ? ` in ${min}..${max}` : "";
    throw new FlagError(`--${name} expects ${kind}${range}, got "${v}"`);
  }
  return x;
}
