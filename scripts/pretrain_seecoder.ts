/**
 * `deno task pretrain --phase seecoder`: trains a tiny SeeCoder (Prompt-Free Diffusion's image encoder) for the
 * model in `--out` on ShapesWorld image-variation pairs (`gpu-worker/seecoder/pairs.ts`: a training-split
 * scene rendered as the reference, another scene of the same description as the target), with the base
 * model's denoising loss through its frozen UNet on the frozen VAE's latents of the target
 * (`gpu-worker/seecoder/trainer.ts`). Checkpoints under `<out>/.pretrain/seecoder/` (every 100 steps; `--resume`
 * continues from the latest); the result goes to `<out>/seecoder/` (config.json + seecoder.safetensors, the
 * official `ctx.image.*` names).
 *
 * Flags: --seecoder-steps 4000 --seecoder-batch 16 --seecoder-lr 5e-4 --seecoder-frozen-backbone
 * --object-weight K (the objects' latent pixels count 1 + K times in the loss; validation stays unweighted)
 * --seecoder-config FILE (default: `TINY_SEECODER_CONFIG`) --seed 0 --resume.
 */
import type { EngineRunner } from "../gpu-worker/ort/runner.ts";
import { loadModelFolder } from "../gpu-worker/models/model_folder.ts";
import { SeeCoderTrainer } from "../gpu-worker/seecoder/trainer.ts";
import { variationPair } from "../gpu-worker/seecoder/pairs.ts";
import { loadSeeCoderFolder, saveSeeCoderFolder } from "../gpu-worker/seecoder/folder.ts";
import { renderScene } from "../gpu-worker/shapesworld/render.ts";
import { type ProgressEvent, runTraining } from "../gpu-worker/training/loop.ts";
import { Rng } from "../gpu-worker/random.ts";
import { objectLatentWeights } from "../gpu-worker/shapesworld/object_weights.ts";
import { SeeCoderTextPretext, textTargets } from "../gpu-worker/seecoder/text_pretext.ts";
import { StableDiffusionPipeline } from "../gpu-worker/pipelines/stable_diffusion.ts";
import { captionOf } from "../gpu-worker/shapesworld/world.ts";
import type { SafetensorsFile } from "../gpu-worker/models/safetensors.ts";

/**
 * The tiny model's SeeCoder: the official architecture at a small width. Swin embed 16 (res3/res4/res5 of
 * 32/64/128 channels), depths 2/2/2/2, window 2 so that a 64x64 reference (16x16 patches, then 8, 4, 2) needs no
 * padding anywhere (every shape static, and no Pad in the backward pass); decoder 64 wide (4 heads, ffn 128,
 * 2 layers); query transformer hidden 64 (the UNet's cross_attention_dim), 4 heads, ffn 128, 3 layers (one per
 * level), and 4 global + 16 local queries: 20 embedding rows instead of the official 148.
 */
export const TINY_SEECODER_CONFIG = {
  architectures: ["SeeCoder"],
  imencoder: {
    embed_dim: 16,
    depths: [2, 2, 2, 2],
    num_heads: [1, 2, 4, 8],
    window_size: 2,
    patch_size: 4,
    ape: false,
    patch_norm: true,
  },
  imdecoder: {
    inchannels: { res3: 32, res4: 64, res5: 128 },
    trans_input_tags: ["res3", "res4", "res5"],
    trans_dim: 64,
    trans_nheads: 4,
    trans_feedforward_dim: 128,
    trans_num_layers: 2,
  },
  qtransformer: {
    in_channels: 64,
    hidden_dim: 64,
    num_queries: [4, 16],
    nheads: 4,
    num_layers: 3,
    feedforward_dim: 128,
    pre_norm: false,
    num_feature_levels: 3,
    enforce_input_project: false,
    with_fea2d_pos: false,
  },
};

export interface SeeCoderPhaseOptions {
  steps: number;
  batch: number;
  lr: number;
  seed: number;
  frozenBackbone: boolean;
  /** Count the objects' latent pixels 1 + K times in the loss (`objectLatentWeights`); 0: plain MSE. */
  objectWeight?: number;
  config?: Record<string, unknown>;
  resume: boolean;
  /** Only measure the validation loss of the SeeCoder already in `<out>/seecoder/`. */
  evalOnly?: boolean;
  /** Pairs in the index space the loop shuffles (each index one seeded pair). */
  dataset?: number;
  /**
   * Steps of the text pretext (`gpu-worker/seecoder/text_pretext.ts`) before the diffusion loss: the whole
   * SeeCoder regresses the frozen text encoder's states of the reference's description. 0: none.
   */
  pretextSteps?: number;
  pretextLr?: number;
  pretextBatch?: number;
  /** Start from the SeeCoder already in `<out>/seecoder/` (fine-tuning it) instead of a random init. */
  fromShipped?: boolean;
  log: (msg: string) => void;
  progress: (label: string) => (e: ProgressEvent) => void;
}

/**
 * The mean loss over 8 batches of held-out pairs (`variationPair(seed + 1, i, "heldout")`) at fixed timesteps
 * and noise, with the reference's embeddings and with zeros (what the reference adds over the unconditional
 * model). Runs the gradient graph (no update).
 */
export async function validationLoss(trainer: SeeCoderTrainer, seed: number, size: number, batches = 8) {
  const B = trainer.batch;
  let reference = 0, zeros = 0;
  for (let k = 0; k < batches; k++) {
    const pairs = Array.from({ length: B }, (_, i) => variationPair(seed + 1, k * B + i, "heldout"));
    const refs = pairs.map((p) => renderScene(p.reference, size));
    const targets = pairs.map((p) => renderScene(p.target, size));
    reference += (await trainer.computeGradients(refs, targets, Rng.derive(seed, 0x7a1, k), true)).loss;
    zeros += (await trainer.computeGradients(refs, targets, Rng.derive(seed, 0x7a1, k), false)).loss;
  }
  return { reference: reference / batches, zeros: zeros / batches };
}

/**
 * The text pretext stage: `steps` of the whole SeeCoder regressing the frozen text encoder's first rows for
 * the reference's description (every attribute named, positions left unsaid: a variation moves the object).
 * Starts from `init` (`--seecoder-from-shipped`: the folder's SeeCoder) or random. Checkpoints under
 * `<out>/.pretrain/seecoder-text/`; writes `<out>/seecoder/` and returns its weights.
 */
export async function pretextStage(
  runner: EngineRunner,
  out: string,
  raw: Record<string, unknown>,
  o: SeeCoderPhaseOptions,
  init?: SafetensorsFile,
): Promise<SafetensorsFile> {
  const folder = await loadModelFolder(out);
  const size = folder.unetConfig.sample_size * folder.vaeScaleFactor;
  const batch = o.pretextBatch ?? 32;
  const pipe = await StableDiffusionPipeline.load(out, runner);
  const pretext = await SeeCoderTextPretext.create(runner, raw, { batch, seed: o.seed, size, init });
  const cache = new Map<string, Float32Array>();
  const steps = o.pretextSteps ?? 0, lr = o.pretextLr ?? 1e-3;
  o.log(`seecoder text pretext: ${steps} steps, batch ${batch}, lr ${lr}, ${pretext.tokens} target rows`);
  const res = await runTraining({
    params: pretext.params(),
    datasetSize: o.dataset ?? 50000,
    steps,
    batchSize: batch,
    seed: o.seed,
    optimizer: { lr, weightDecay: 1e-2 },
    lrSchedule: { name: "cosine", warmupSteps: 200 },
    maxGradNorm: 1,
    checkpoint: { dir: `${out}/.pretrain/seecoder-text`, every: 200, keep: 2, config: { seecoder: raw } },
    resume: o.resume,
    onProgress: o.progress("seecoder-text"),
    gradients: async (mb) => {
      const refs = mb.indices.map((i) => variationPair(o.seed, i, "train").reference);
      const captions = refs.map((sc) => captionOf(sc, undefined, { omitPosition: true }));
      const targets = await textTargets(pipe, captions, pretext.tokens, cache);
      return await pretext.computeGradients(refs.map((sc) => renderScene(sc, size)), targets);
    },
  });
  const recipe = {
    stage: "text pretext",
    pretext_steps: String(steps),
    pretext_batch: String(batch),
    pretext_lr: String(lr),
    seed: String(o.seed),
    pretext_last_loss: res.losses.at(-1)?.toFixed(5) ?? "",
  };
  await saveSeeCoderFolder(out, raw, pretext.config, pretext.all, recipe);
  await pretext.release();
  await pipe.release();
  o.log(`seecoder text pretext done: last losses ${res.losses.slice(-5).map((l) => l.toFixed(4)).join(" ")}`);
  return (await loadSeeCoderFolder(out)).weights;
}

/** Runs the phase; returns the last losses and the path written. */
export async function trainSeeCoder(runner: EngineRunner, out: string, o: SeeCoderPhaseOptions) {
  const folder = await loadModelFolder(out);
  const raw = o.config ??
    (o.evalOnly || o.fromShipped ? (await loadSeeCoderFolder(out)).rawConfig : TINY_SEECODER_CONFIG);
  let init = o.evalOnly || o.fromShipped ? (await loadSeeCoderFolder(out)).weights : undefined;
  if (!o.evalOnly && (o.pretextSteps ?? 0) > 0) init = await pretextStage(runner, out, raw, o, init);
  if (!o.evalOnly && o.steps === 0) return { losses: [], path: `${out}/seecoder`, validation: null };
  const trainer = await SeeCoderTrainer.create(runner, folder, raw, {
    batch: o.batch,
    seed: o.seed,
    freezeBackbone: o.frozenBackbone,
    init,
  });
  const size = folder.unetConfig.sample_size * folder.vaeScaleFactor;
  if (o.evalOnly) {
    const val = await validationLoss(trainer, o.seed, size);
    o.log(
      `seecoder ${out}/seecoder: validation loss ${val.reference.toFixed(4)} with the reference, ` +
        `${val.zeros.toFixed(4)} with zero embeddings`,
    );
    await trainer.release();
    return { losses: [], path: "", validation: val };
  }
  o.log(
    `seecoder: ${trainer.trainedParameterCount()} of ${trainer.parameterCount()} parameters trained ` +
      `(backbone ${o.frozenBackbone ? "frozen" : "trained jointly"}), graph of ${trainer.nodeCount} nodes, ` +
      `${trainer.predictionType} loss`,
  );
  const res = await runTraining({
    params: trainer.params(),
    datasetSize: o.dataset ?? 50000,
    steps: o.steps,
    batchSize: o.batch,
    seed: o.seed,
    optimizer: { lr: o.lr, weightDecay: 1e-2 },
    lrSchedule: { name: "cosine", warmupSteps: 200 },
    maxGradNorm: 1,
    checkpoint: {
      dir: `${out}/.pretrain/seecoder`,
      every: 100,
      keep: 2,
      config: { seecoder: raw, frozenBackbone: o.frozenBackbone, objectWeight: o.objectWeight ?? 0 },
    },
    resume: o.resume,
    onProgress: o.progress("seecoder"),
    gradients: async (mb) => {
      const pairs = mb.indices.map((i) => variationPair(o.seed, i, "train"));
      const targets = pairs.map((p) => renderScene(p.target, size));
      const k = o.objectWeight ?? 0;
      const weights = k > 0
        ? targets.map((img, b) =>
          objectLatentWeights(img, pairs[b].target.background, k, folder.vaeScaleFactor)
        )
        : undefined;
      return await trainer.computeGradients(
        pairs.map((p) => renderScene(p.reference, size)),
        targets,
        mb.rng,
        undefined,
        weights,
      );
    },
  });
  const val = await validationLoss(trainer, o.seed, size);
  o.log(
    `seecoder validation (held-out pairs, fixed t and noise): loss ${val.reference.toFixed(4)} with the ` +
      `reference, ${val.zeros.toFixed(4)} with zero embeddings`,
  );
  const recipe = {
    steps: String(o.steps),
    batch: String(o.batch),
    lr: String(o.lr),
    seed: String(o.seed),
    backbone: o.frozenBackbone ? "frozen" : "joint",
    init: o.fromShipped ? "the shipped SeeCoder" : (o.pretextSteps ?? 0) > 0 ? "text pretext" : "random",
    pretext_steps: String(o.pretextSteps ?? 0),
    object_weight: String(o.objectWeight ?? 0),
    validation: JSON.stringify(val),
  };
  const path = await saveSeeCoderFolder(out, raw, trainer.config, trainer.all, recipe);
  await trainer.release();
  o.log(`seecoder done (${path}): last losses ${res.losses.slice(-5).map((l) => l.toFixed(4)).join(" ")}`);
  return { losses: res.losses, path, validation: val };
}
