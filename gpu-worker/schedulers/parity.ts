/**
 * Scheduler parity with diffusers for a fixture folder laid out as `../shared/reference/schedulers/`
 * (config.json keyed `<sampler>.<prediction>`, io.safetensors with the chains): replays every chain through
 * our sampler and reports the worst relative error of scaled inputs and steps, plus the DDPM training
 * schedule (alphas_cumprod, add_noise, get_velocity). Timesteps must match exactly. A stochastic sampler's chain
 * (Euler ancestral) carries each step's noise as `.noise.i`, which the replay feeds to the step. The scheduler
 * tests replay the same chains with `replaySchedulerChain` (through `testing_reference.ts`).
 */
import { loadSafetensors, type SafetensorsFile } from "../models/safetensors.ts";
import { Rng } from "../random.ts";
import { relativeError } from "../testing.ts";
import {
  addNoise,
  alphasCumprod,
  betasFor,
  createScheduler,
  getVelocity,
  parseSchedulerConfigJson,
  type Scheduler,
} from "./scheduler.ts";
import type { ParityRow } from "../models/parity.ts";

const FIXTURE_NAMES: Record<string, string> = {
  ddim: "ddim",
  euler: "euler",
  dpmpp2m: "dpmpp_2m",
  euler_a: "euler_a",
};

/** A fixture folder: the configs (by key such as `ddim.epsilon`) and the tensors. */
export interface SchedulerFixtures {
  configs: Record<string, Record<string, unknown>>;
  io: SafetensorsFile;
}

/** Reads `dir`/config.json and `dir`/io.safetensors. */
export async function loadSchedulerFixtures(dir: string): Promise<SchedulerFixtures> {
  const configs = parseSchedulerConfigJson(await Deno.readTextFile(`${dir}/config.json`));
  const io = await loadSafetensors(`${dir}/io.safetensors`);
  return { configs: configs as Record<string, Record<string, unknown>>, io };
}

/** An Rng whose one `normal(n)` draw is the fixture's noise for a step (as diffusers drew it). */
class FixtureNoise extends Rng {
  #noise: Float32Array | null;
  constructor(noise: Float32Array, readonly what: string) {
    super(0);
    this.#noise = noise;
  }
  override normal(n: number, std = 1): Float32Array {
    const noise = this.#noise;
    if (!noise || noise.length !== n || std !== 1) {
      throw new RangeError(
        `${this.what}: the step drew normal(${n}, ${std}); the fixture has one draw of ${noise?.length}`,
      );
    }
    this.#noise = null;
    return noise.slice();
  }
  override gauss(): number {
    throw new RangeError(`${this.what}: the step drew single values; the fixture has one normal() draw`);
  }
}

/** Worst relative errors of a replayed chain. */
export interface ChainResult {
  steps: number;
  maxScaledInput: number;
  maxPrev: number;
}

/**
 * Replays the chain `key` (e.g. `euler.v_prediction`): setTimesteps(len(timesteps)), hand our timesteps (as
 * int64, the fixture's type: fractional Euler timesteps truncate) and the fixture's to `checkTimesteps`, start at
 * `.init`, and per step compare scaleModelInput with `.scaled_input.i` and step(model_output.i) with `.prev.i`
 * (the step given `.noise.i` as its one normal() draw where the fixture has it). The chain runs on its own samples
 * (errors may compound, as they would in use).
 */
export function replaySchedulerChain(
  io: SafetensorsFile,
  key: string,
  scheduler: Scheduler,
  checkTimesteps: (got: number[], expected: number[]) => void = () => {},
): ChainResult {
  const expected = io.int(`${key}.timesteps`);
  scheduler.setTimesteps(expected.length);
  checkTimesteps(scheduler.timesteps.map(Math.trunc), expected);
  let x = io.float32(`${key}.init`);
  let maxScaledInput = 0, maxPrev = 0;
  for (let i = 0; i < expected.length; i++) {
    const t = scheduler.timesteps[i];
    const xin = scheduler.scaleModelInput(x, t);
    maxScaledInput = Math.max(maxScaledInput, relativeError(xin, io.float32(`${key}.scaled_input.${i}`)));
    const noise = io.has(`${key}.noise.${i}`)
      ? new FixtureNoise(io.float32(`${key}.noise.${i}`), `${key} step ${i}`)
      : undefined;
    x = scheduler.step(io.float32(`model_output.${i}`), t, x, noise);
    maxPrev = Math.max(maxPrev, relativeError(x, io.float32(`${key}.prev.${i}`)));
  }
  return { steps: expected.length, maxScaledInput, maxPrev };
}

export async function runSchedulerParity(dir: string, tolerance = 1e-5): Promise<ParityRow[]> {
  const { configs, io } = await loadSchedulerFixtures(dir);
  const rows: ParityRow[] = [];
  for (const [key, config] of Object.entries(configs)) {
    const name = FIXTURE_NAMES[key.split(".")[0]];
    if (!name) throw new RangeError(`${dir}/config.json: unknown sampler in key "${key}"`);
    let same = false;
    const chain = replaySchedulerChain(io, key, createScheduler(config, { name }), (got, expected) => {
      same = got.length === expected.length && got.every((t, i) => t === expected[i]);
    });
    rows.push({ output: `${key}.timesteps`, relError: same ? 0 : Infinity, tolerance: 0 });
    rows.push({ output: `${key}.scaled_input`, relError: chain.maxScaledInput, tolerance });
    rows.push({ output: `${key}.prev`, relError: chain.maxPrev, tolerance });
  }
  if (io.has("ddpm.alphas_cumprod")) {
    const cfg = Object.values(configs)[0];
    const acp = alphasCumprod(betasFor(cfg));
    rows.push({
      output: "ddpm.alphas_cumprod",
      relError: relativeError(acp, io.float32("ddpm.alphas_cumprod")),
      tolerance,
    });
    const x0 = io.float32("ddpm.x0"), noise = io.float32("ddpm.noise");
    const ts = io.int("ddpm.t");
    const noisy: number[] = [], velocity: number[] = [];
    for (const t of ts) {
      noisy.push(...addNoise(acp, x0, noise, t));
      velocity.push(...getVelocity(acp, x0, noise, t));
    }
    rows.push({
      output: "ddpm.add_noise",
      relError: relativeError(noisy, io.float32("ddpm.noisy")),
      tolerance,
    });
    rows.push({
      output: "ddpm.get_velocity",
      relError: relativeError(velocity, io.float32("ddpm.velocity")),
      tolerance,
    });
  }
  return rows;
}
