/**
 * Test support for the scheduler tests (not used at runtime): SD 1.5's noise schedule, and diffusers' reference
 * chains from `shared/reference/schedulers/`, loaded and replayed by `parity.ts` (the same replay as
 * `deno task parity`) with the tests' assertions on top.
 */
import { assert, assertEquals } from "../testing.ts";
import type { Scheduler } from "./scheduler.ts";
import {
  type ChainResult,
  loadSchedulerFixtures,
  replaySchedulerChain,
  type SchedulerFixtures,
} from "./parity.ts";

export type { ChainResult };

/** Folder of the scheduler fixtures (made by shared/reference/tools/make_fixtures.py). */
export const REFERENCE_DIR = new URL("../../../shared/reference/schedulers/", import.meta.url);

/** SD 1.5's noise schedule (as its scheduler_config.json has it), the base config of most scheduler tests. */
export const SD15 = {
  beta_schedule: "scaled_linear",
  beta_start: 0.00085,
  beta_end: 0.012,
  steps_offset: 1,
} as const;

/** The fixture configs (by key such as `ddim.epsilon`) and tensors. */
export type SchedulerReference = SchedulerFixtures;

let cached: Promise<SchedulerReference> | null = null;

/** Loads (once) config.json and io.safetensors. */
export function loadSchedulerReference(): Promise<SchedulerReference> {
  cached ??= loadSchedulerFixtures(REFERENCE_DIR.pathname.replace(/\/$/, ""));
  return cached;
}

/**
 * The project's Euler ancestral fixture (made by scripts/reference/make_euler_ancestral_fixture.py with
 * diffusers' EulerAncestralDiscreteScheduler): chains keyed `euler_a.<prediction>`, each step's noise included.
 */
export const EULER_ANCESTRAL_DIR = new URL("./fixtures/euler_ancestral/", import.meta.url);

let cachedEulerAncestral: Promise<SchedulerReference> | null = null;

/** Loads (once) the Euler ancestral fixture. */
export function loadEulerAncestralReference(): Promise<SchedulerReference> {
  cachedEulerAncestral ??= loadSchedulerFixtures(EULER_ANCESTRAL_DIR.pathname.replace(/\/$/, ""));
  return cachedEulerAncestral;
}

/**
 * Replays the chain `key` (`replaySchedulerChain`), asserting first that the timesteps match exactly (as int64,
 * the fixture's type: fractional Euler timesteps truncate).
 */
export function replayChain(ref: SchedulerReference, key: string, scheduler: Scheduler): ChainResult {
  return replaySchedulerChain(
    ref.io,
    key,
    scheduler,
    (got, expected) => assertEquals(got, expected, `${key} timesteps`),
  );
}

/** `replayChain`, then logs the worst errors and asserts that both are below 1e-5. */
export function assertChainMatches(ref: SchedulerReference, key: string, scheduler: Scheduler): ChainResult {
  const r = replayChain(ref, key, scheduler);
  console.log(
    `${key}: ${r.steps} steps, max relative error input ${r.maxScaledInput.toExponential(2)}, prev ${
      r.maxPrev.toExponential(2)
    }`,
  );
  assert(r.maxScaledInput < 1e-5 && r.maxPrev < 1e-5, JSON.stringify(r));
  return r;
}
