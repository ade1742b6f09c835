/**
 * Concept Sliders (Gandikota et al., ECCV 2024): a LoRA whose scale moves one attribute, trained without
 * images (text sliders: the frozen model's own guidance direction) or from image pairs (visual sliders).
 *
 * Text slider step, as the sliders repository's `train_lora.py`: pick k ~ U[1, max_denoising_steps - 1] and a
 * direction d = +-1; denoise noise for k steps of DDIM with the slider at d (CFG `denoise_guidance`, the
 * target prompt) to get x_t; with the slider off, target = eps(x_t, neutral) + d * sign * eta *
 * (eps(x_t, positive) - eps(x_t, negative)) (sign -1 for `erase`), each prompt with a preservation attribute
 * when given; loss = MSE(eps_slider(d)(x_t, target prompt), target). Visual slider step: a pair (A = less,
 * B = more, scale s), one eps and t for both; loss = |eps_{-s}(x_t^A, prompt) - eps|^2 + |eps_{+s}(x_t^B,
 * prompt) - eps|^2.
 *
 * Output: the slider as a LoRA file (`pytorch_lora_weights.safetensors`, diffusers' PEFT keys; kohya/LECO keys
 * on download) with its prompts, train method and kind in the metadata.
 *
 * @example
 * ```ts
 * const r = await conceptSlider(runner, { model: "models/tiny-shapes", out: "out/size",
 *   config: { positive: "a large circle", negative: "a small circle", target: "a circle", steps: 200 } });
 * ```
 */
import type { EngineRunner } from "../ort/runner.ts";
import { loadModelFolder, type ModelFolder, vaeEncoderGraph } from "../models/model_folder.ts";
import { loraTargets } from "../models/lora_targets.ts";
import { DiffusionTrainer } from "../training/diffusion_trainer.ts";
import { FrozenUNet } from "../training/frozen_unet.ts";
import { runTraining } from "../training/loop.ts";
import { alphasCumprod, betasFor, createScheduler } from "../schedulers/scheduler.ts";
import { scaledPosterior, unpackPosterior } from "../training/posterior.ts";
import { resizeBilinear, type RgbImage } from "../image/png.ts";
import { encodeLora, LORA_FILE_NAME, type LoraAdapter } from "../adapters/lora.ts";
import { Rng } from "../random.ts";
import { Tensor } from "../tensor.ts";
import { JobInputError } from "../input_error.ts";
import { type MethodRunOptions, runLoopOptions } from "./method_run.ts";

/** A slider's settings (API names; see shared/methods/concept_slider.ts for the defaults). */
export interface ConceptSliderConfig {
  kind?: "text" | "visual";
  target?: string;
  positive?: string;
  negative?: string;
  neutral?: string;
  action?: "enhance" | "erase";
  guidance_scale?: number;
  attributes?: string[];
  rank?: number;
  alpha?: number;
  train_method?: "noxattn" | "innoxattn" | "selfattn" | "xattn" | "full" | "c3lier";
  steps?: number;
  learning_rate?: number;
  seed?: number;
  max_denoising_steps?: number;
  denoise_guidance?: number;
}

/** The settings with every default filled. */
export type ResolvedSliderConfig = Required<Omit<ConceptSliderConfig, "positive">> & { positive: string };

/** One visual pair: the same subject with less (`low`) and more (`high`) of the attribute. */
export interface SliderPair {
  low: RgbImage;
  high: RgbImage;
  /** How far apart the pair is (the sliders repo's folders: -2 -1 1 2 as verylow/low/high/veryhigh). */
  scale: number;
}

export interface ConceptSliderOptions extends MethodRunOptions {
  config: ConceptSliderConfig;
  /** Visual sliders: the pairs (decoded images). */
  pairs?: SliderPair[];
}

export interface ConceptSliderResult {
  file: string;
  adapter: LoraAdapter;
  config: ResolvedSliderConfig;
  losses: number[];
  /** Mean loss on fixed draws before and after training. */
  evalLoss: { before: number; after: number };
  trainedParameters: number;
}

/** Fixed draws the evaluation averages over. */
const EVAL_DRAWS = 4;

/** The official defaults (sliders repo), except the two that a small model's sampling needs fewer of. */
export function resolveSliderConfig(c: ConceptSliderConfig, pairs = 0): ResolvedSliderConfig {
  const kind = c.kind ?? "text";
  if (kind === "text" && !c.positive) {
    throw new JobInputError("a text slider needs positive (the prompt of more of the attribute)");
  }
  if (kind === "visual" && pairs === 0) {
    throw new JobInputError("a visual slider needs at least one image pair");
  }
  const negative = c.negative ?? "";
  const r: ResolvedSliderConfig = {
    kind,
    target: c.target ?? "",
    positive: c.positive ?? "",
    negative,
    neutral: c.neutral ?? negative,
    action: c.action ?? "enhance",
    guidance_scale: c.guidance_scale ?? 4,
    attributes: c.attributes ?? [],
    rank: c.rank ?? 4,
    alpha: c.alpha ?? 1,
    train_method: c.train_method ?? "noxattn",
    steps: c.steps ?? 1000,
    learning_rate: c.learning_rate ?? 2e-4,
    seed: c.seed ?? 0,
    max_denoising_steps: c.max_denoising_steps ?? 50,
    denoise_guidance: c.denoise_guidance ?? 3,
  };
  if (
    !(Number.isInteger(r.max_denoising_steps) && r.max_denoising_steps >= 2 && r.max_denoising_steps <= 1000)
  ) {
    throw new JobInputError(
      `max_denoising_steps must be an integer in 2..1000, got ${r.max_denoising_steps}`,
    );
  }
  loraTargets(r.train_method); // a known set
  return r;
}

/** A prompt with a preservation attribute: `{}` in the prompt marks where it goes, else it is prefixed. */
export function withAttribute(prompt: string, attribute: string | null): string {
  if (!attribute) return prompt.replace("{}", "").replace(/\s+/g, " ").trim();
  return prompt.includes("{}") ? prompt.replace("{}", attribute) : `${attribute} ${prompt}`.trim();
}

export async function conceptSlider(
  runner: EngineRunner,
  o: ConceptSliderOptions,
): Promise<ConceptSliderResult> {
  const folder = await loadModelFolder(o.model);
  const cfg = resolveSliderConfig(o.config, o.pairs?.length ?? 0);
  const targets = loraTargets(cfg.train_method);
  const log = o.onLog ?? (() => {});
  let trainer: DiffusionTrainer | null = null, frozen: FrozenUNet | null = null;
  try {
    trainer = await DiffusionTrainer.create(runner, folder, {
      batch: 1,
      lora: { targets, rank: cfg.rank, alpha: cfg.alpha, seed: cfg.seed },
    });
    frozen = await FrozenUNet.create(runner, folder, { loraTargets: targets });
    const tr = trainer, fz = frozen;
    const step = cfg.kind === "text"
      ? await textSliderStep(folder, tr, fz, cfg)
      : await visualSliderStep(runner, folder, tr, cfg, o.pairs!);
    log(
      `training a rank-${cfg.rank} ${cfg.kind} slider (${cfg.train_method}, ${fz.loraModules.length} modules), ` +
        `${cfg.steps} steps`,
    );
    // Fixed draws (direction, k, noise, pair), the same before and after: the slider's loss on them.
    const evaluate = async () => {
      let sum = 0;
      for (let i = 0; i < EVAL_DRAWS; i++) sum += (await step(Rng.derive(cfg.seed, 0xe7a1, i))).loss;
      return sum / EVAL_DRAWS;
    };
    const before = await evaluate();
    const res = await runTraining({
      params: tr.params(),
      datasetSize: 1,
      steps: cfg.steps,
      batchSize: 1,
      seed: cfg.seed,
      optimizer: { lr: cfg.learning_rate, betas: [0.9, 0.999], weightDecay: 1e-2, eps: 1e-8 },
      lrSchedule: { name: "constant" },
      maxGradNorm: 1,
      ...runLoopOptions(o, "concept_slider", cfg),
      gradients: (mb) => step(mb.rng),
    });
    const after = await evaluate();
    log(`slider loss on ${EVAL_DRAWS} fixed draws: ${before.toFixed(4)} -> ${after.toFixed(4)}`);
    const weights = tr.loraWeights("slider");
    const modules: LoraAdapter["modules"] = new Map();
    for (const m of fz.loraModules) {
      const w = weights.modules.get(m.path)!;
      modules.set(m.path, {
        down: Float32Array.from(w.down),
        up: Float32Array.from(w.up),
        inFeatures: m.inFeatures,
        outFeatures: m.outFeatures,
        kernel: m.kernel,
      });
    }
    const adapter: LoraAdapter = {
      name: "slider",
      rank: cfg.rank,
      alpha: cfg.alpha,
      modules,
      info: {
        method: "concept_slider",
        kind: cfg.kind,
        target: cfg.target,
        positive: cfg.positive,
        negative: cfg.negative,
        neutral: cfg.neutral,
        action: cfg.action,
        guidance_scale: cfg.guidance_scale,
        attributes: cfg.attributes,
        train_method: cfg.train_method,
        steps: cfg.steps,
      },
    };
    await Deno.mkdir(o.out, { recursive: true });
    const file = `${o.out}/${LORA_FILE_NAME}`;
    await Deno.writeFile(file, encodeLora(adapter));
    return {
      file,
      adapter,
      config: cfg,
      losses: res.losses,
      evalLoss: { before, after },
      trainedParameters: tr.trainedParameterCount(),
    };
  } finally {
    await trainer?.release();
    await frozen?.release();
  }
}

type StepFn = (rng: Rng) => Promise<{ loss: number; grads: Record<string, Float32Array> }>;

/** The text slider's step (see the module doc). */
async function textSliderStep(
  folder: ModelFolder,
  tr: DiffusionTrainer,
  fz: FrozenUNet,
  cfg: ResolvedSliderConfig,
): Promise<StepFn> {
  const u = folder.unetConfig;
  const n = u.in_channels * u.sample_size * u.sample_size;
  const sign = cfg.action === "erase" ? -1 : 1;
  const attrs = cfg.attributes.length ? cfg.attributes : [null];
  const uncond = await fz.encodePrompts([""]);
  return async (rng) => {
    const attribute = attrs[rng.int(attrs.length)];
    const p = (x: string) => withAttribute(x, attribute);
    const d = rng.uniform() < 0.5 ? 1 : -1;
    const k = 1 + rng.int(cfg.max_denoising_steps - 1);
    const scheduler = createScheduler(folder.schedulerConfig, { name: "ddim" });
    scheduler.setTimesteps(cfg.max_denoising_steps);
    const start = rng.normal(n).map((x) => x * scheduler.initNoiseSigma);
    const [targetEmb, neutral, positive, negative] = await Promise.all(
      [cfg.target, cfg.neutral, cfg.positive, cfg.negative].map((x) => fz.encodePrompts([p(x)])),
    );
    const { latents, timestep } = await fz.denoise({
      latents: start,
      scheduler,
      steps: k,
      cond: targetEmb,
      uncond,
      guidance: cfg.denoise_guidance,
      adapters: [{ lora: tr.loraWeights(), scale: d }],
    });
    const three = new Float32Array(3 * n);
    for (let i = 0; i < 3; i++) three.set(latents, i * n);
    const embs = Tensor.concat([neutral, positive, negative]);
    const eps = await fz.predict(three, [timestep, timestep, timestep], embs);
    const eta = cfg.guidance_scale * d * sign;
    const target = new Float32Array(n);
    for (let i = 0; i < n; i++) target[i] = eps[i] + eta * (eps[n + i] - eps[2 * n + i]);
    const r = await tr.computeGradients(
      [{ noisy: latents, timestep, caption: p(cfg.target), target }],
      rng,
      { loraScale: d },
    );
    return { loss: r.loss, grads: r.grads };
  };
}

/** The visual slider's step (see the module doc): each pair encoded once by the VAE. */
async function visualSliderStep(
  runner: EngineRunner,
  folder: ModelFolder,
  tr: DiffusionTrainer,
  cfg: ResolvedSliderConfig,
  pairs: SliderPair[],
): Promise<StepFn> {
  const u = folder.unetConfig;
  const R = u.sample_size * folder.vaeScaleFactor;
  const n = u.in_channels * u.sample_size * u.sample_size;
  pairs.forEach((p, i) => {
    if (p.low.width !== p.high.width || p.low.height !== p.high.height) {
      throw new JobInputError(
        `pairs[${i}]: low is ${p.low.width}x${p.low.height} but high is ${p.high.width}x${p.high.height}; ` +
          `a pair must be the same size`,
      );
    }
    if (!(Number.isFinite(p.scale) && p.scale !== 0)) {
      throw new JobInputError(`pairs[${i}].scale must be a non-zero number, got ${p.scale}`);
    }
  });
  const g = vaeEncoderGraph(folder);
  const enc = await runner.createSession(g.toBytes(), { inputs: g.inputs });
  const sf = folder.vaeConfig.scaling_factor;
  const latents: { low: Float32Array; high: Float32Array; scale: number }[] = [];
  try {
    for (const p of pairs) {
      const lat = async (img: RgbImage) =>
        Float32Array.from(unpackPosterior(await scaledPosterior(enc, resizeBilinear(img, R, R), sf)).latent);
      latents.push({ low: await lat(p.low), high: await lat(p.high), scale: p.scale });
    }
  } finally {
    await enc.release();
  }
  const acp = alphasCumprod(betasFor(folder.schedulerConfig));
  return async (rng) => {
    const pair = latents[rng.int(latents.length)];
    const t = rng.int(acp.length);
    const eps = rng.normal(n);
    const a = Math.sqrt(acp[t]), s = Math.sqrt(1 - acp[t]);
    const noisy = (z: Float32Array) => z.map((v, i) => a * v + s * eps[i]);
    // The model's own target: eps, or v = a eps - s z for a v-prediction model.
    const target = (z: Float32Array) =>
      tr.predictionType === "epsilon" ? eps : z.map((v, i) => a * eps[i] - s * v);
    const side = (z: Float32Array, scale: number) =>
      tr.computeGradients([{ noisy: noisy(z), timestep: t, caption: cfg.target, target: target(z) }], rng, {
        loraScale: scale,
      });
    const lo = await side(pair.low, -pair.scale);
    const hi = await side(pair.high, pair.scale);
    const grads: Record<string, Float32Array> = {};
    for (const [k, v] of Object.entries(lo.grads)) grads[k] = v.map((x, i) => x + hi.grads[k][i]);
    return { loss: lo.loss + hi.loss, grads };
  };
}
