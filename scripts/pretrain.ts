/**
 * `deno task pretrain`: trains the tiny ShapesWorld base model from scratch with this project's own engine
 * (autodiff over ONNX, AdamW), in three phases, and writes it in diffusers layout:
 *   1. the VAE (reconstruction + small KL) on rendered ShapesWorld images of the whole world (it reads no
 *      captions; see `vaeImage`); `--colour-latent W` adds the term that makes latents linear in colour
 *      (see `training/vae_trainer.ts`);
 *   2. latents of a fixed, seeded set of training scenes, encoded once; the latent scale (scaling_factor)
 *      set to 1 / std of those latents, as SD did;
 *   3. the UNet and the text encoder together on (latent, caption) pairs, captions dropped 10% of the time so
 *      classifier-free guidance works (with `--attribute-drop P`, captions re-drawn each time with an object's
 *      colour or shape left unsaid with chance P; with `--text-probe W`, linear probes on the text encoder's
 *      output add W x the cross-entropy of each token's object colour and shape, see `textProbes` in
 *      `training/diffusion_trainer.ts` and `shapesworld/token_labels.ts`);
 *   4. (only with `--phase decoder`) the VAE decoder alone, fine-tuned on posterior samples of the fixed
 *      encoder with L1 + MSE, as Stability's ft-MSE decoder: the latent space (and the UNet) stay valid,
 *      textures and colours come back truer. It can run after or alongside phase 3. `--object-weight K` counts
 *      the objects' pixels 1 + K times in its loss (`objectPixelWeights`): they are a few percent of an image.
 *   5. (only with `--phase seecoder`) a tiny SeeCoder (Prompt-Free Diffusion's image encoder) on ShapesWorld
 *      image-variation pairs through the frozen UNet and VAE; see `scripts/pretrain_seecoder.ts`.
 * Each phase checkpoints under `<out>/.pretrain/` and resumes (`--resume`) after an interruption.
 *
 * Usage: deno task pretrain [--out models/tiny-shapes] [--vae-steps 2500] [--unet-steps 9000] [--batch 16]
 *          [--dataset 20000] [--seed 0] [--resume] [--phase vae|latents|unet|decoder|seecoder|all]
 *          [--decoder-steps 3000] [--decoder-lr 3e-4] [--latent-channels 4] [--kl-weight 1e-4] [--vae-l1 0]
 *          [--lr 5e-4] [--vae-batch 8] [--vae-lr 1e-3] [--colour-latent 0]
 *          [--attribute-drop 0] [--text-probe 0] [--object-weight 0]
 *          [--seecoder-steps 4000] [--seecoder-batch 16] [--seecoder-lr 5e-4] [--seecoder-frozen-backbone]
 *          [--seecoder-config FILE] [--seecoder-eval (only the validation loss of <out>/seecoder)]
 *          [--seecoder-pretext-steps 0] [--seecoder-pretext-lr 1e-3] [--seecoder-from-shipped]
 *          [--json (progress and log lines as JSON on stdout; a bar on stderr when stdout is a terminal)]
 */
import { parseArgs } from "node:util";
import { Progress, type ProgressMode, progressMode } from "./progress.ts";
import { EngineRunner } from "../gpu-worker/ort/runner.ts";
import { parseVaeConfig } from "../gpu-worker/models/autoencoder_kl.ts";
import { WeightSource } from "../gpu-worker/models/weights.ts";
import { loadSafetensors, readSafetensors, writeSafetensors } from "../gpu-worker/models/safetensors.ts";
import { GraphBuilder } from "../gpu-worker/graph/builder.ts";
import { ModelContext } from "../gpu-worker/models/layers.ts";
import { buildVaeEncoder } from "../gpu-worker/models/autoencoder_kl.ts";
import { loadModelFolder } from "../gpu-worker/models/model_folder.ts";
import { VaeTrainer } from "../gpu-worker/training/vae_trainer.ts";
import { DiffusionTrainer, type TrainingExample } from "../gpu-worker/training/diffusion_trainer.ts";
import { type ProgressEvent, runTraining } from "../gpu-worker/training/loop.ts";
import { Rng } from "../gpu-worker/random.ts";
import { imagesToTensor } from "../gpu-worker/image/png.ts";
import {
  captionOf,
  parseCaption,
  sampleScene,
  sampleTrainScene,
  type Scene,
} from "../gpu-worker/shapesworld/world.ts";
import { renderScene } from "../gpu-worker/shapesworld/render.ts";
import { makeTinyModel } from "./make_tiny_model.ts";
import { FlagError, numberFlag } from "./flags.ts";
import { attributeTokenLabels } from "../gpu-worker/shapesworld/token_labels.ts";
import { COLOURS, SHAPES } from "../gpu-worker/shapesworld/world.ts";
import { Tensor } from "../gpu-worker/tensor.ts";
import { objectLatentWeights, objectPixelWeights } from "../gpu-worker/shapesworld/object_weights.ts";
import { trainSeeCoder } from "./pretrain_seecoder.ts";

const SIZE = 64;
/**
 * With `--colour-latent W`, the VAE's first three latent channels (unscaled) are pulled towards 2 x the patch's
 * mean RGB in [-1, 1]: about the spread (std 1.9) the unconstrained latents had.
 */
const COLOUR_LATENT_SCALE = 2;

/** Scene i of the pretraining set (training split), and the item's RNG after drawing it. */
function trainScene(seed: number, i: number) {
  const rng = Rng.derive(seed, 0x5eed, i);
  return { scene: sampleTrainScene(rng, { twoObjectProbability: 0.25 }), rng };
}

/** Training item i of the pretraining set: a seeded scene, its rendering and a caption (seeded per item). */
function item(seed: number, i: number) {
  const { scene, rng } = trainScene(seed, i);
  return { image: renderScene(scene, SIZE), caption: captionOf(scene, rng) };
}

/**
 * With `--attribute-drop`, the UNet phase draws a fresh caption of item i's scene every time the item comes
 * up (instead of the one stored with the latents): size, texture and position dropped as usual, and the colour
 * or the shape left unsaid with that chance. The scenes are drawn once here; the stored captions must describe
 * them, so latents made with another seed fail here rather than train on wrong captions.
 */
/** The seeded scenes behind the stored latents' captions; refuses latents encoded with another seed. */
function storedScenes(seed: number, stored: string[], flag: string) {
  const scenes = stored.map((_, i) => trainScene(seed, i).scene);
  for (let i = 0; i < Math.min(stored.length, 200); i++) {
    const want = scenes[i];
    const got = parseCaption(stored[i]);
    const same = got.background === want.background && got.objects.length === want.objects.length &&
      got.objects.every((o, k) => o.colour === want.objects[k].colour && o.shape === want.objects[k].shape);
    if (!same) {
      const msg = `${flag}: stored caption ${i} ("${stored[i]}") does not describe scene ${i} of seed ` +
        `${seed}; encode the latents with the same --seed`;
      throw new Error(msg);
    }
  }
  return scenes;
}

function recaptioner(scenes: Scene[], attributeDrop: number) {
  return (i: number, rng: Rng) => captionOf(scenes[i], rng, { attributeDropProbability: attributeDrop });
}

/**
 * Image i of the autoencoder's set: a seeded scene of the whole world, held-out combinations included. The VAE
 * never sees a caption; it is an image codec (SD's was trained on other images than its UNet), and one trained
 * on the training split alone learned the split's colour pairs: it decoded a black cross on red, a held-out
 * pair, as green. Held-out pairs stay out of everything that reads captions (text encoder and UNet).
 */
function vaeScene(seed: number, i: number) {
  return sampleScene(Rng.derive(seed, 0x7ae, i), { twoObjectProbability: 0.25 });
}

function vaeImage(seed: number, i: number) {
  return renderScene(vaeScene(seed, i), SIZE);
}

/** How progress shows (`scripts/progress.ts`): set from `--json` and whether stdout is a terminal. */
let mode: ProgressMode = "off";
const bars = new Map<string, Progress>();

/** A timestamped log line: printed (under the bar on a terminal), or a `{"type":"log"}` line with --json. */
function log(msg: string) {
  const line = `[${new Date().toISOString().slice(11, 19)}] ${msg}`;
  if (mode === "off") console.log(line);
  else (bars.values().next().value ?? new Progress("pretrain", mode)).log(line);
}

/**
 * A phase's progress: a bar (step, loss, rate, ETA) on a terminal, JSON lines with --json, and off a terminal
 * (a pipe, a nohup log) a log line every 25 steps with the learning rate and gradient norm as well.
 */
function progress(label: string) {
  return (e: ProgressEvent) => {
    if (mode !== "off") {
      let bar = bars.get(label);
      if (!bar) bars.set(label, bar = new Progress(label, mode));
      const rate = Number.isFinite(e.stepsPerSecond) ? e.stepsPerSecond : undefined;
      bar.update({
        step: e.step,
        total: e.steps,
        loss: e.loss,
        stepsPerSecond: rate,
        etaSeconds: rate && e.etaSeconds,
      });
      if (e.step === e.steps) bar.end();
      return;
    }
    if (e.step % 25 === 0 || e.step === e.steps) {
      log(
        `${label} step ${e.step}/${e.steps} loss ${e.loss.toFixed(4)} lr ${e.lr.toExponential(2)} ` +
          `grad norm ${e.gradNorm.toFixed(3)} ` +
          `${e.stepsPerSecond.toFixed(2)} steps/s eta ${(e.etaSeconds / 60).toFixed(1)} min`,
      );
    }
  };
}

async function saveTensors(
  path: string,
  tensors: Map<string, { shape: number[]; data: Float32Array }>,
  prefix = "",
) {
  const out: Record<string, { dtype: "F32"; shape: number[]; data: Float32Array }> = {};
  for (const [k, v] of tensors) out[prefix + k] = { dtype: "F32", shape: v.shape, data: v.data };
  await Deno.writeFile(path, writeSafetensors(out, { format: "pt" }));
}

async function trainVae(runner: EngineRunner, out: string, o: Opts) {
  const cfg = parseVaeConfig(JSON.parse(await Deno.readTextFile(`${out}/vae/config.json`)));
  const weights = WeightSource.fromFiles([
    await loadSafetensors(`${out}/vae/diffusion_pytorch_model.safetensors`),
  ]);
  const vae = await VaeTrainer.create(runner, cfg, weights, {
    batch: o.vaeBatch,
    size: SIZE,
    klWeight: o.klWeight,
    l1Weight: o.vaeL1,
    colourLatent: o.colourLatent > 0 ? { weight: o.colourLatent, scale: COLOUR_LATENT_SCALE } : undefined,
  });
  const res = await runTraining({
    params: vae.params(),
    datasetSize: o.dataset,
    steps: o.vaeSteps,
    batchSize: o.vaeBatch,
    seed: o.seed,
    optimizer: { lr: o.vaeLr, weightDecay: 0 },
    lrSchedule: { name: "cosine", warmupSteps: 50 },
    maxGradNorm: 1,
    checkpoint: { dir: `${out}/.pretrain/vae`, every: 100, keep: 2 },
    resume: o.resume,
    onProgress: progress("vae"),
    gradients: async (mb) => {
      const images = imagesToTensor(mb.indices.map((i) => vaeImage(o.seed, i)));
      return await vae.computeGradients(images, mb.rng);
    },
  });
  await saveTensors(
    `${out}/vae/diffusion_pytorch_model.safetensors`,
    new Map(vae.trained.map((t) => [t.name, t])),
  );
  await vae.release();
  log(`vae done: last losses ${res.losses.slice(-5).map((l) => l.toFixed(4)).join(" ")}`);
}

/** Encodes the dataset's images to posterior means and stds; sets scaling_factor = 1 / std(latents). */
async function encodeLatents(runner: EngineRunner, out: string, o: Opts) {
  const cfgRaw = JSON.parse(await Deno.readTextFile(`${out}/vae/config.json`));
  const s = await encoderSession(runner, out);
  const chunk = 32;
  const means: Float32Array[] = [], stds: Float32Array[] = [];
  const captions: string[] = [];
  for (let start = 0; start < o.dataset; start += chunk) {
    const items = Array.from(
      { length: Math.min(chunk, o.dataset - start) },
      (_, k) => item(o.seed, start + k),
    );
    const r = await s.run({ image: imagesToTensor(items.map((x) => x.image)) });
    const per = r.latent_mean.size / items.length;
    items.forEach((it, k) => {
      means.push(r.latent_mean.f.slice(k * per, (k + 1) * per));
      stds.push(r.latent_logvar.f.slice(k * per, (k + 1) * per).map((lv) => Math.exp(0.5 * lv)));
      captions.push(it.caption);
    });
    if ((start / chunk) % 50 === 0) log(`latents ${start + items.length}/${o.dataset}`);
  }
  await s.release();
  let sum = 0, sq = 0, n = 0;
  for (const m of means) {
    for (const v of m) {
      sum += v;
      sq += v * v;
      n++;
    }
  }
  const std = Math.sqrt(sq / n - (sum / n) ** 2);
  cfgRaw.scaling_factor = Number((1 / std).toPrecision(5));
  await Deno.writeTextFile(`${out}/vae/config.json`, JSON.stringify(cfgRaw, null, 2) + "\n");
  const per = means[0].length;
  const all = new Float32Array(means.length * per), allStd = new Float32Array(means.length * per);
  means.forEach((m, i) => all.set(m, i * per));
  stds.forEach((m, i) => allStd.set(m, i * per));
  await Deno.mkdir(`${out}/.pretrain`, { recursive: true });
  await Deno.writeFile(
    `${out}/.pretrain/latents.safetensors`,
    writeSafetensors({
      mean: { dtype: "F32", shape: [means.length, per], data: all },
      std: { dtype: "F32", shape: [means.length, per], data: allStd },
    }, { captions: JSON.stringify(captions) }),
  );
  log(`latents: ${means.length} items, std ${std.toFixed(4)} -> scaling_factor ${cfgRaw.scaling_factor}`);
}

/**
 * A session of the VAE encoder in `<out>/vae` (outputs latent_mean and latent_logvar); `weights` when the
 * caller has already read that folder's safetensors.
 */
async function encoderSession(
  runner: EngineRunner,
  out: string,
  weights?: Awaited<ReturnType<typeof loadSafetensors>>,
) {
  const cfg = parseVaeConfig(JSON.parse(await Deno.readTextFile(`${out}/vae/config.json`)));
  const g = new GraphBuilder("vae_encoder");
  weights ??= await loadSafetensors(`${out}/vae/diffusion_pytorch_model.safetensors`);
  buildVaeEncoder(new ModelContext(g, WeightSource.fromFiles([weights])), cfg);
  return await runner.createSession(g.toBytes(), { inputs: g.inputs });
}

/**
 * Phase 4: the decoder alone, on posterior samples of the fixed encoder over the autoencoder's image set, with
 * L1 + MSE: the latent space (and the UNet trained on it) stays valid while decoding gets better.
 */
async function trainDecoder(runner: EngineRunner, out: string, o: Opts) {
  const cfg = parseVaeConfig(JSON.parse(await Deno.readTextFile(`${out}/vae/config.json`)));
  const vaePath = `${out}/vae/diffusion_pytorch_model.safetensors`;
  const current = readSafetensors(await Deno.readFile(vaePath), vaePath);
  const encoder = await encoderSession(runner, out, current);
  const vae = await VaeTrainer.create(runner, cfg, WeightSource.fromFiles([current]), {
    batch: o.vaeBatch,
    size: SIZE,
    decoderOnly: true,
    l1Weight: 1,
    pixelWeights: o.objectWeight > 0,
  });
  const res = await runTraining({
    params: vae.params(),
    datasetSize: o.dataset,
    steps: o.decoderSteps,
    batchSize: o.vaeBatch,
    seed: o.seed,
    optimizer: { lr: o.decoderLr, weightDecay: 0 },
    lrSchedule: { name: "cosine", warmupSteps: 50 },
    maxGradNorm: 1,
    checkpoint: { dir: `${out}/.pretrain/decoder`, every: 100, keep: 2 },
    resume: o.resume,
    onProgress: progress("decoder"),
    gradients: async (mb) => {
      const scenes = mb.indices.map((i) => vaeScene(o.seed, i));
      const renders = scenes.map((sc) => renderScene(sc, SIZE));
      const images = imagesToTensor(renders);
      const r = await encoder.run({ image: images });
      const eps = mb.rng.normal(r.latent_mean.size);
      const z = r.latent_mean.f.map((m, j) => m + Math.exp(0.5 * r.latent_logvar.f[j]) * eps[j]);
      const weights = o.objectWeight > 0
        ? objectPixelWeights(renders, scenes.map((sc) => sc.background), o.objectWeight)
        : undefined;
      return await vae.computeGradients(images, mb.rng, Tensor.f32(r.latent_mean.dims, z), weights);
    },
  });
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const name of current.names()) {
    tensors.set(name, { shape: current.entry(name).shape, data: current.float32(name) });
  }
  for (const t of vae.trained) tensors.set(t.name, t);
  await saveTensors(vaePath, tensors);
  await vae.release();
  await encoder.release();
  log(`decoder done: last losses ${res.losses.slice(-5).map((l) => l.toFixed(4)).join(" ")}`);
}

async function trainUNet(runner: EngineRunner, out: string, o: Opts) {
  const file = readSafetensors(
    await Deno.readFile(`${out}/.pretrain/latents.safetensors`),
    "latents.safetensors",
  );
  const captions: string[] = JSON.parse(file.metadata.captions);
  const mean = file.float32("mean"), std = file.float32("std");
  const per = file.entry("mean").shape[1];
  const sf = JSON.parse(await Deno.readTextFile(`${out}/vae/config.json`)).scaling_factor as number;
  const folder = await loadModelFolder(out);
  const trainer = await DiffusionTrainer.create(runner, folder, {
    batch: o.batch,
    unetTrainable: () => true,
    textEncoder: { trainable: () => true },
    textProbes: o.textProbe > 0
      ? [
        { name: "colour", classes: COLOURS.length, weight: o.textProbe },
        { name: "shape", classes: SHAPES.length, weight: o.textProbe },
      ]
      : undefined,
  });
  log(`unet+text: ${trainer.trainedParameterCount()} parameters, graph of ${trainer.nodeCount} nodes`);
  const scenes = o.attributeDrop > 0 || o.objectWeight > 0
    ? storedScenes(o.seed, captions, o.attributeDrop > 0 ? "--attribute-drop" : "--object-weight")
    : null;
  const recaption = o.attributeDrop > 0 ? recaptioner(scenes!, o.attributeDrop) : null;
  // With --object-weight, the loss mask weighs each latent pixel by the share of its patch that is an object's.
  const f = SIZE / Math.sqrt(per / folder.unetConfig.in_channels);
  const masks = new Map<number, Float32Array>();
  const maskOf = (i: number) => {
    let m = masks.get(i);
    if (!m) {
      masks.set(
        i,
        m = objectLatentWeights(renderScene(scenes![i], SIZE), scenes![i].background, o.objectWeight, f),
      );
    }
    return m;
  };
  const L = Math.min(folder.tokenizer.modelMaxLength, folder.textConfig.max_position_embeddings);
  const labels = new Map<string, ReturnType<typeof attributeTokenLabels>>();
  const labelsOf = (caption: string) => {
    let l = labels.get(caption);
    if (!l) labels.set(caption, l = attributeTokenLabels(caption, folder.tokenizer, L));
    return { colour: l.colour, shape: l.shape };
  };
  const example = (i: number, rng: Rng): TrainingExample => {
    // Unconditional 10% of the time, for classifier-free guidance.
    const caption = rng.uniform() < 0.1 ? "" : recaption ? recaption(i, rng) : captions[i];
    return {
      latent: mean.subarray(i * per, (i + 1) * per).map((v) => v * sf),
      latentStd: std.subarray(i * per, (i + 1) * per).map((v) => v * sf),
      caption,
      probeLabels: o.textProbe > 0 ? labelsOf(caption) : undefined,
      mask: o.objectWeight > 0 ? maskOf(i) : undefined,
    };
  };
  // Running means of the probes' cross-entropies, printed with the progress.
  const probeMeans: Record<string, number> = {};
  const onProgress = progress("unet");
  const res = await runTraining({
    params: trainer.params(),
    datasetSize: captions.length,
    steps: o.unetSteps,
    batchSize: o.batch,
    seed: o.seed,
    optimizer: { lr: o.lr, weightDecay: 1e-2 },
    lrSchedule: { name: "cosine", warmupSteps: 100 },
    maxGradNorm: 1,
    checkpoint: { dir: `${out}/.pretrain/unet`, every: 100, keep: 2 },
    resume: o.resume,
    onProgress: (e) => {
      onProgress(e);
      if (o.textProbe > 0 && e.step % 25 === 0) {
        log(`  text probes (cross-entropy, running mean): ${JSON.stringify(probeMeans)}`);
      }
    },
    gradients: async (mb) => {
      const r = await trainer.computeGradients(mb.indices.map((i) => example(i, mb.rng)), mb.rng);
      for (const [k, v] of Object.entries(r.probeLosses)) {
        probeMeans[k] = Number(((probeMeans[k] ?? v) * 0.95 + v * 0.05).toFixed(4));
      }
      return r;
    },
  });
  const unet = new Map<string, { shape: number[]; data: Float32Array }>();
  const text = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const t of trainer.trained) {
    // The probes only shape training; the model has no place for them.
    if (t.kind !== "probe") (t.kind === "unet" ? unet : text).set(t.name, t);
  }
  await saveTensors(`${out}/unet/diffusion_pytorch_model.safetensors`, unet);
  await saveTensors(`${out}/text_encoder/model.safetensors`, text, "text_model.");
  await trainer.release();
  log(`unet done: last losses ${res.losses.slice(-5).map((l) => l.toFixed(4)).join(" ")}`);
}

interface Opts {
  vaeSteps: number;
  vaeBatch: number;
  vaeLr: number;
  unetSteps: number;
  decoderSteps: number;
  decoderLr: number;
  latentChannels: number;
  klWeight: number;
  vaeL1: number;
  colourLatent: number;
  batch: number;
  dataset: number;
  seed: number;
  lr: number;
  attributeDrop: number;
  textProbe: number;
  objectWeight: number;
  resume: boolean;
}

const OPTIONS = {
  out: { type: "string" },
  "vae-steps": { type: "string" },
  "vae-batch": { type: "string" },
  "vae-lr": { type: "string" },
  "unet-steps": { type: "string" },
  "decoder-steps": { type: "string" },
  "decoder-lr": { type: "string" },
  "latent-channels": { type: "string" },
  "kl-weight": { type: "string" },
  "vae-l1": { type: "string" },
  "colour-latent": { type: "string" },
  batch: { type: "string" },
  dataset: { type: "string" },
  seed: { type: "string" },
  lr: { type: "string" },
  "attribute-drop": { type: "string" },
  "text-probe": { type: "string" },
  "object-weight": { type: "string" },
  phase: { type: "string" },
  resume: { type: "boolean" },
  json: { type: "boolean" },
  "seecoder-steps": { type: "string" },
  "seecoder-batch": { type: "string" },
  "seecoder-lr": { type: "string" },
  "seecoder-frozen-backbone": { type: "boolean" },
  "seecoder-config": { type: "string" },
  "seecoder-eval": { type: "boolean" },
  "seecoder-pretext-steps": { type: "string" },
  "seecoder-pretext-lr": { type: "string" },
  "seecoder-from-shipped": { type: "boolean" },
} as const;

/** The flags; an unknown flag or a flag without its value is a usage error (exit 2), not an uncaught exception. */
function flags(args: string[]) {
  try {
    return parseArgs({ args, options: OPTIONS }).values;
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    Deno.exit(2);
  }
}

if (import.meta.main) {
  const values = flags(Deno.args);
  mode = progressMode(values.json);
  const out = values.out ?? "models/tiny-shapes";
  const int = (name: string, fallback: number, min = 1) =>
    numberFlag(name, values[name as keyof typeof values] as string | undefined, { integer: true, min }) ??
      fallback;
  const positive = (name: string, fallback: number, min = Number.MIN_VALUE) =>
    numberFlag(name, values[name as keyof typeof values] as string | undefined, { min }) ?? fallback;
  let o: Opts;
  try {
    o = {
      vaeSteps: int("vae-steps", 2500),
      vaeBatch: int("vae-batch", 8),
      vaeLr: positive("vae-lr", 1e-3),
      unetSteps: int("unet-steps", 9000),
      decoderSteps: int("decoder-steps", 3000),
      decoderLr: positive("decoder-lr", 3e-4),
      latentChannels: int("latent-channels", 4),
      klWeight: positive("kl-weight", 1e-4, 0),
      vaeL1: positive("vae-l1", 0, 0),
      colourLatent: positive("colour-latent", 0, 0),
      batch: int("batch", 16),
      dataset: int("dataset", 20000),
      seed: int("seed", 0, 0),
      lr: positive("lr", 5e-4),
      attributeDrop: numberFlag("attribute-drop", values["attribute-drop"], { min: 0, max: 1 }) ?? 0,
      textProbe: positive("text-probe", 0, 0),
      objectWeight: positive("object-weight", 0, 0),
      resume: !!values.resume,
    };
  } catch (e) {
    if (!(e instanceof FlagError)) throw e;
    console.error(e.message);
    Deno.exit(2);
  }

  const phase = values.phase ?? "all";
  if (!["all", "vae", "latents", "unet", "decoder", "seecoder"].includes(phase)) {
    console.error(`--phase must be one of all, vae, latents, unet, decoder, seecoder; got "${phase}"`);
    Deno.exit(2);
  }
  const runner = new EngineRunner();
  try {
    if (phase === "all" && !o.resume) {
      log(
        `fresh architecture: ${
          JSON.stringify(await makeTinyModel(out, o.seed, { latentChannels: o.latentChannels }))
        }`,
      );
    }
    if (phase === "all" || phase === "vae") await trainVae(runner, out, o);
    if (phase === "all" || phase === "latents") await encodeLatents(runner, out, o);
    if (phase === "all" || phase === "unet") await trainUNet(runner, out, o);
    if (phase === "decoder") await trainDecoder(runner, out, o);
    if (phase === "seecoder") {
      await trainSeeCoder(runner, out, {
        steps: int("seecoder-steps", 4000, 0),
        batch: int("seecoder-batch", 16),
        lr: positive("seecoder-lr", 5e-4),
        seed: o.seed,
        frozenBackbone: !!values["seecoder-frozen-backbone"],
        objectWeight: o.objectWeight,
        config: values["seecoder-config"]
          ? JSON.parse(await Deno.readTextFile(values["seecoder-config"]))
          : undefined,
        resume: o.resume,
        evalOnly: !!values["seecoder-eval"],
        pretextSteps: int("seecoder-pretext-steps", 0, 0),
        pretextLr: positive("seecoder-pretext-lr", 1e-3),
        fromShipped: !!values["seecoder-from-shipped"],
        log,
        progress,
      });
    }
  } finally {
    runner.terminate();
  }
}
