/**
 * Per-key rate limits: a fixed window of `limit` requests per `windowMs`, answered with the IETF
 * RateLimit header fields (draft-ietf-httpapi-ratelimit-headers: `RateLimit-Policy: "default";q=120;w=60`,
 * `RateLimit: "default";r=119;t=42`) on every response, and 429 with `Retry-After` past the limit.
 * Counters live in this edge process: several edges each allow the limit (a Durable Object counts globally).
 *
 * @example
 * ```ts
 * const limiter = new RateLimiter({ limit: 120, windowMs: 60_000 });
 * const d = limiter.take("key-hash"); // { allowed: true, remaining: 119, resetS: 60, ... }
 * ```
 */
export interface RateLimitPolicy {
  limit: number;
  windowMs: number;
}

export interface RateDecision {
  allowed: boolean;
  remaining: number;
  /** Seconds until the window resets. */
  resetS: number;
  headers: Record<string, string>;
}

export class RateLimiter {
  readonly #windows = new Map<string, { start: number; count: number }>();

  constructor(readonly policy: RateLimitPolicy, private readonly now: () => number = Date.now) {}

  take(key: string): RateDecision {
    const now = this.now();
    const { limit, windowMs } = this.policy;
    let w = this.#windows.get(key);
    if (!w || now - w.start >= windowMs) {
      if (this.#windows.size > 100_000) this.#sweep(now);
      this.#windows.set(key, w = { start: now - (now % windowMs), count: 0 });
    }
    const allowed = w.count < limit;
    if (allowed) w.count++;
    const remaining = Math.max(0, limit - w.count);
    const resetS = Math.max(1, Math.ceil((w.start + windowMs - now) / 1000));
    const headers: Record<string, string> = {
      "RateLimit-Policy": `"default";q=${limit};w=${Math.ceil(windowMs / 1000)}`,
      "RateLimit": `"default";r=${remaining};t=${resetS}`,
    };
    if (!allowed) headers["Retry-After"] = String(resetS);
    return { allowed, remaining, resetS, headers };
  }

  #sweep(now: number) {
    for (const [k, w] of this.#windows) if (now - w.start >= this.policy.windowMs) this.#windows.delete(k);
  }
}
