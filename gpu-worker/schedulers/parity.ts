/**
 * Scheduler parity with diffusers for a fixture folder laid out as `../shared/reference/schedulers/`
 * (config.json keyed `<sampler>.<prediction>`, io.safetensors with the chains): replays every chain through
 * our sampler and reports the worst relative error of scaled inputs and steps, plus the DDPM training
 * schedule (alphas_cumprod, add_noise, get_velocity). Timesteps must match exactly.
 */
import { loadSafetensors } from "../models/safetensors.ts";
import { relativeError } from "../testing.ts";
import {
  addNoise,
  alphasCumprod,
  betasFor,
  createScheduler,
  getVelocity,
  parseSchedulerConfigJson,
} from "./scheduler.ts";
import type { ParityRow } from "../models/parity.ts";

const FIXTURE_NAMES: Record<string, string> = {
  ddim: "ddim",
  euler: "euler",
  dpmpp2m: "dpmpp_2m",
  euler_a: "euler_a",
};

export async function runSchedulerParity(dir: string, tolerance = 1e-5): Promise<ParityRow[]> {
  const configs = parseSchedulerConfigJson(await Deno.readTextFile(`${dir}/config.json`)) as Record<
    string,
    Record<string, unknown>
  >;
  const io = await loadSafetensors(`${dir}/io.safetensors`);
  const rows: ParityRow[] = [];
  for (const [key, config] of Object.entries(configs)) {
    const name = FIXTURE_NAMES[key.split(".")[0]];
    if (!name) throw new RangeError(`${dir}/config.json: unknown sampler in key "${key}"`);
    const s = createScheduler(config, { name });
    const expected = io.int(`${key}.timesteps`);
    s.setTimesteps(expected.length);
    const got = s.timesteps.map(Math.trunc);
    const same = got.length === expected.length && got.every((t, i) => t === expected[i]);
    rows.push({ output: `${key}.timesteps`, relError: same ? 0 : Infinity, tolerance: 0 });
    let x = io.float32(`${key}.init`);
    let worstIn = 0, worstPrev = 0;
    for (let i = 0; i < expected.length; i++) {
      const t = s.timesteps[i];
      worstIn = Math.max(
        worstIn,
        relativeError(s.scaleModelInput(x, t), io.float32(`${key}.scaled_input.${i}`)),
      );
      x = s.step(io.float32(`model_output.${i}`), t, x);
      worstPrev = Math.max(worstPrev, relativeError(x, io.float32(`${key}.prev.${i}`)));
    }
    rows.push({ output: `${key}.scaled_input`, relError: worstIn, tolerance });
    rows.push({ output: `${key}.prev`, relError: worstPrev, tolerance });
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
