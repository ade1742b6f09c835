/**
 * The frozen model as a training target: an inference UNet session of the same folder that gives the model's
 * output (eps, or v for a v-prediction model) at a given x_t, t and prompt embeddings, with LoRA adapters at
 * any scales or none. Concept Sliders regress the slider onto eps(x_t, neutral) + eta (eps(x_t, c+) -
 * eps(x_t, c-)) of the frozen model, at an x_t that a partial denoising run with the slider on produced
 * (`denoise`); both happen here, with the trainer's current factors (`DiffusionTrainer.loraWeights`).
 * Deterministic: no randomness of its own (a sampler with noise takes the caller's rng).
 *
 * @example
 * ```ts
 * const frozen = await FrozenUNet.create(runner, folder, { loraTargets: loraTargets("noxattn") });
 * const prompts = await frozen.encodePrompts(["a person", "a smiling person", "a frowning person"]);
 * // One x_t ([1, C, h, w]) three times, one prompt each: eps(neutral), eps(c+), eps(c-).
 * const eps = await frozen.predict(Float32Array.of(...xt, ...xt, ...xt), [t, t, t], prompts);
 * const n = xt.length;
 * const target = xt.map((_, i) => eps[i] + 4 * (eps[n + i] - eps[2 * n + i]));
 * ```
 */
import { loraSlotFeeds } from "../adapters/lora_feeds.ts";
import type { LoraModule } from "../models/layers.ts";
import { type ModelFolder, unetGraph } from "../models/model_folder.ts";
import type { EngineRunner, RemoteSession } from "../ort/runner.ts";
import type { LoraWeights } from "../pipelines/stable_diffusion.ts";
import { classifierFreeGuidance } from "../pipelines/guidance.ts";
import type { Scheduler } from "../schedulers/scheduler.ts";
import type { Rng } from "../random.ts";
import { Tensor } from "../tensor.ts";
import { FrozenTextEncoder } from "./frozen_text_encoder.ts";

/** An adapter at one scale (the LoRA's alpha / rank is applied on top). */
export interface ScaledLora {
  lora: LoraWeights;
  scale: number;
}

/** Options of {@link FrozenUNet.denoise}. */
export interface PartialDenoiseOptions {
  /** Starting latents [B, C, h, w] (for text-to-image: noise x the scheduler's initNoiseSigma). */
  latents: Float32Array;
  /** A sampler on which `setTimesteps` was called; its timesteps from the first are run. */
  scheduler: Scheduler;
  /** How many of its steps to run (k >= 0); x_t then sits at `scheduler.timesteps[k]`. */
  steps: number;
  /** Conditional embeddings [B or 1, L, D]. */
  cond: Tensor;
  /** Unconditional embeddings [B or 1, L, D], for classifier-free guidance (needs `guidance`). */
  uncond?: Tensor;
  guidance?: number;
  adapters?: readonly ScaledLora[];
  /** For samplers that add noise (DDIM with eta > 0, ancestral ones). */
  rng?: Rng;
}

export class FrozenUNet {
  private constructor(
    readonly folder: ModelFolder,
    /** The UNet modules with LoRA slots. */
    readonly loraModules: readonly LoraModule[],
    private readonly session: RemoteSession,
    private readonly text: FrozenTextEncoder,
  ) {}

  /**
   * Opens the UNet (LoRA slots on `loraTargets`, default diffusers' attention projections) and the text encoder
   * of `folder`.
   */
  static async create(
    runner: EngineRunner,
    folder: ModelFolder,
    o: { loraTargets?: RegExp[] } = {},
  ): Promise<FrozenUNet> {
    const { graph, loraModules } = unetGraph(folder, {
      lora: o.loraTargets ? { targets: o.loraTargets } : undefined,
    });
    const session = await runner.createSession(graph.toBytes(), { inputs: graph.inputs });
    return new FrozenUNet(folder, loraModules, session, await FrozenTextEncoder.create(runner, folder));
  }

  /** Prompt embeddings [n, L, D] by the frozen text encoder (cached per prompt). */
  encodePrompts(prompts: string[]): Promise<Tensor> {
    return this.text.embed(prompts);
  }

  /**
   * The model output [B, C, h, w] for `sample` [B, C, h, w] at `timesteps` (B of them), with embeddings of
   * batch B (or 1, shared) and `adapters` on (none: the base model).
   */
  async predict(
    sample: Float32Array,
    timesteps: ArrayLike<number>,
    encoderHiddenStates: Tensor,
    adapters: readonly ScaledLora[] = [],
  ): Promise<Float32Array> {
    const u = this.folder.unetConfig;
    const B = timesteps.length, C = u.in_channels, h = u.sample_size, w = u.sample_size;
    if (sample.length !== B * C * h * w) {
      throw new RangeError(
        `predict: sample has ${sample.length} values, expected ${B * C * h * w} (${B}x${C}x${h}x${w})`,
      );
    }
    const out = await this.session.run({
      sample: Tensor.f32([B, C, h, w], sample),
      timestep: Tensor.f32([B], Float32Array.from(timesteps)),
      encoder_hidden_states: batchOf(encoderHiddenStates, B, "encoderHiddenStates"),
      ...this.loraFeeds(adapters),
    }, ["out_sample"]);
    return out.out_sample.f;
  }

  /**
   * Runs the first `steps` steps of `scheduler` from `latents` (classifier-free guidance when `uncond` and
   * `guidance` are given), adapters on; returns x_t and the timestep it sits at (`scheduler.timesteps[steps]`),
   * what a slider step trains at.
   */
  async denoise(o: PartialDenoiseOptions): Promise<{ latents: Float32Array; timestep: number }> {
    const ts = o.scheduler.timesteps;
    if (!(Number.isInteger(o.steps) && o.steps >= 0 && o.steps < ts.length)) {
      throw new RangeError(`denoise: steps must be an integer in 0..${ts.length - 1}, got ${o.steps}`);
    }
    if ((o.uncond === undefined) !== (o.guidance === undefined)) {
      throw new RangeError("denoise: classifier-free guidance needs both uncond and guidance");
    }
    const u = this.folder.unetConfig;
    const n = u.in_channels * u.sample_size * u.sample_size;
    const B = o.latents.length / n;
    if (!Number.isInteger(B) || B < 1) {
      throw new RangeError(`denoise: latents have ${o.latents.length} values, not a multiple of ${n}`);
    }
    const cfg = o.uncond !== undefined;
    const ehs = cfg ? Tensor.concat([batchOf(o.uncond!, B, "uncond"), batchOf(o.cond, B, "cond")]) : o.cond;
    let latents = o.latents;
    for (let i = 0; i < o.steps; i++) {
      const t = ts[i];
      const scaled = o.scheduler.scaleModelInput(latents, t);
      const input = cfg ? concat(scaled, scaled) : scaled;
      let pred = await this.predict(input, new Array(cfg ? 2 * B : B).fill(t), ehs, o.adapters);
      if (cfg) pred = classifierFreeGuidance(pred, B, o.guidance!);
      latents = o.scheduler.step(pred, t, latents, o.rng);
    }
    return { latents, timestep: ts[o.steps] };
  }

  /**
   * Slot feeds: adapters concatenated along the rank, each rank row scaled by scale x alpha / rank; a slot
   * no adapter uses gets one zero row (a rank-0 tensor is not every kernel's friend).
   */
  private loraFeeds(adapters: readonly ScaledLora[]): Record<string, Tensor> {
    const slots = new Set(this.loraModules.map((m) => m.path));
    for (const a of adapters) {
      if (!Number.isFinite(a.scale)) {
        throw new RangeError(`adapter "${a.lora.name}": scale ${a.scale} is not finite`);
      }
      for (const path of a.lora.modules.keys()) {
        if (!slots.has(path)) {
          throw new RangeError(
            `adapter "${a.lora.name}" targets ${path}, which has no LoRA slot in this UNet (build it with loraTargets that match)`,
          );
        }
      }
    }
    return loraSlotFeeds(this.loraModules, adapters, 0, 1);
  }

  async release(): Promise<void> {
    await this.session.release();
    await this.text.release();
  }
}

/** `t` with batch B: as is, or its single sample repeated. */
function batchOf(t: Tensor, B: number, what: string): Tensor {
  if (t.dims[0] === B) return t;
  if (t.dims[0] !== 1) throw new RangeError(`${what}: batch ${t.dims[0]}, expected ${B} or 1`);
  const one = t.f, out = new Float32Array(B * one.length);
  for (let b = 0; b < B; b++) out.set(one, b * one.length);
  return Tensor.f32([B, ...t.dims.slice(1)], out);
}

function concat(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
