/**
 * Test support for the scheduler tests (not used at runtime): loads diffusers' reference chains from
 * `shared/reference/schedulers/` and replays them through one of our samplers.
 */
import { loadSafetensors, type SafetensorsFile } from "../models/safetensors.ts";
import { assertEquals, relativeError } from "../testing.ts";
import { parseSchedulerConfigJson, type Scheduler } from "./scheduler.ts";

/** Folder of the scheduler fixtures (made by shared/reference/tools/make_fixtures.py). */
export const REFERENCE_DIR = new URL("../../../shared/reference/schedulers/", import.meta.url);

/** The fixture configs (by key such as `ddim.epsilon`) and tensors. */
export interface SchedulerReference {
  configs: Record<string, Record<string, unknown>>;
  io: SafetensorsFile;
}

let cached: Promise<SchedulerReference> | null = null;

/** Loads (once) config.json and io.safetensors. */
export function loadSchedulerReference(): Promise<SchedulerReference> {
  cached ??= (async () => {
    const configs = parseSchedulerConfigJson(await Deno.readTextFile(new URL("config.json", REFERENCE_DIR)));
    const io = await loadSafetensors(new URL("io.safetensors", REFERENCE_DIR).pathname);
    return { configs: configs as Record<string, Record<string, unknown>>, io };
  })();
  return cached;
}

/** Worst relative errors of a replayed chain. */
export interface ChainResult {
  steps: number;
  maxScaledInput: number;
  maxPrev: number;
}

/**
 * Replays the chain `key` (e.g. `euler.v_prediction`): setTimesteps(len(timesteps)), start at `.init`, and per
 * step compare scaleModelInput with `.scaled_input.i` and step(model_output.i) with `.prev.i`. The chain runs on
 * its own samples (errors may compound, as they would in use). Timesteps must match exactly (as int64, the fixture's type: fractional Euler timesteps truncate).
 */
export function replayChain(ref: SchedulerReference, key: string, scheduler: Scheduler): ChainResult {
  const io = ref.io;
  const expected = io.int(`${key}.timesteps`);
  scheduler.setTimesteps(expected.length);
  assertEquals(scheduler.timesteps.map(Math.trunc), expected, `${key} timesteps`);
  let x = io.float32(`${key}.init`);
  let maxScaledInput = 0, maxPrev = 0;
  for (let i = 0; i < expected.length; i++) {
    const t = scheduler.timesteps[i];
    const xin = scheduler.scaleModelInput(x, t);
    maxScaledInput = Math.max(maxScaledInput, relativeError(xin, io.float32(`${key}.scaled_input.${i}`)));
    const want = io.float32(`${key}.prev.${i}`);
    x = scheduler.step(io.float32(`model_output.${i}`), t, x);
    maxPrev = Math.max(maxPrev, relativeError(x, want));
  }
  return { steps: expected.length, maxScaledInput, maxPrev };
}
