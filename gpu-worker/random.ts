/**
 * Seeded randomness for everything reproducible (initial latents, ancestral noise, data order, init):
 * xoshiro128** seeded through splitmix32, normals by Box-Muller. Same seed, same numbers, on every machine.
 *
 * @example
 * ```ts
 * const rng = new Rng(42);
 * const noise = rng.normal(16); // Float32Array of 16 standard normals
 * ```
 */
export class Rng {
  private s = new Uint32Array(4);
  private spare: number | null = null;

  constructor(seed: number) {
    let x = (seed >>> 0) ^ Math.floor(seed / 4294967296);
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      this.s[i] = (z ^ (z >>> 16)) >>> 0;
    }
    if (this.s.every((v) => v === 0)) this.s[0] = 1;
  }

  /**
   * A fresh stream determined only by `seed` and the integer `keys` (e.g. `Rng.derive(seed, epoch)`,
   * `Rng.derive(seed, step, micro)`), independent of any other stream's history. The integers are hashed
   * (murmur3-style, four lanes) into the full 128-bit state, so nearby keys give unrelated streams, and
   * `derive(s, 1, 2)`, `derive(s, 12)` and `derive(s, 1, 2, 0)` all differ. Keys must be safe integers.
   */
  static derive(seed: number, ...keys: number[]): Rng {
    const words: number[] = [];
    for (const k of [seed, ...keys]) {
      if (!Number.isSafeInteger(k)) throw new RangeError(`Rng.derive: ${k} is not a safe integer`);
      words.push(k >>> 0, Math.floor(k / 4294967296) >>> 0);
    }
    const rng = new Rng(0);
    for (let lane = 0; lane < 4; lane++) {
      let h = Math.imul(lane + 1, 0x9e3779b9) >>> 0;
      for (const w of words) {
        let k = Math.imul(w, 0xcc9e2d51);
        k = Math.imul(rotl(k >>> 0, 15), 0x1b873593);
        h = rotl((h ^ k) >>> 0, 13);
        h = (Math.imul(h, 5) + 0xe6546b64) >>> 0;
      }
      h = (h ^ (words.length * 4)) >>> 0;
      h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0;
      h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
      rng.s[lane] = (h ^ (h >>> 16)) >>> 0;
    }
    if (rng.s.every((v) => v === 0)) rng.s[0] = 1;
    return rng;
  }

  /** Next uint32. */
  nextU32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1] << 9) >>> 0;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** Uniform in [0, 1). */
  uniform(): number {
    return this.nextU32() / 4294967296;
  }

  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.uniform() * n);
  }

  /** One standard normal. */
  gauss(): number {
    if (this.spare !== null) {
      const v = this.spare;
      this.spare = null;
      return v;
    }
    let u = 0;
    while (u === 0) u = this.uniform();
    const v = this.uniform();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }

  /** `n` standard normals (times `std`). */
  normal(n: number, std = 1): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = this.gauss() * std;
    return out;
  }

  /** Fisher-Yates shuffle in place. */
  shuffle<T>(xs: T[]): T[] {
    for (let i = xs.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      [xs[i], xs[j]] = [xs[j], xs[i]];
    }
    return xs;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}
