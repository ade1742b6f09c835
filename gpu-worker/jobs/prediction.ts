/**
 * Prediction jobs: txt2img / img2img on the cached pipeline of the job's base model (or of the full fine-tune
 * among its adapters), with the job's LoRA adapters fed into the pipeline's LoRA slots (no session is rebuilt),
 * progress on every step, a small preview PNG every few steps (throttled), and one PNG output per image.
 *
 * Input: `PredictionWork` (shared/prediction.ts, API.md names), parsed once with the lease: `image` and each
 * adapter are resolved to blobs by the edge (see `resolveBlob`). Of the optional features
 * (`PREDICTION_FEATURE_REGISTRY`) it serves img2img, sliders and regions (each region's prompt, box and LoRA
 * adapters, through the UNet's regional cross-attention and region noise aggregation), and `reference_image`
 * (Prompt-Free Diffusion: the base model folder's SeeCoder encodes the image in place of the prompt; CFG 2.0
 * by default, zeros unconditional; a negative prompt is ignored with a line in the job's logs) when the worker
 * registered it (`served.ts`: every model it serves has a SeeCoder); a job asking for another is refused
 * before it is parsed.
 *
 * @example
 * ```ts
 * const { outputs, metrics } = await predict(ctx); // ctx.job.kind === "prediction"
 * ```
 */
import { Buffer } from "node:buffer";
import { fullModelConflict } from "../../shared/adapters.ts";
import type { PredictionFeature } from "../../shared/methods.ts";
import type { LeasedPrediction } from "../../shared/worker_protocol.ts";
import { AdapterError, JobInputError } from "../input_error.ts";
import { encodePng, resizeBilinear, type RgbImage } from "../image/png.ts";
import { decodeImage } from "../training/data.ts";
import { decodeMask } from "../image/mask.ts";
import type {
  AdapterUse,
  LoraWeights,
  RegionSpec,
  StableDiffusionPipeline,
} from "../pipelines/stable_diffusion.ts";
import type { BlobRef } from "../../shared/blob_store.ts";
import { regionMasks } from "../pipelines/regions.ts";
import { SLIDER_START_TIMESTEP, sliderScale } from "../pipelines/sliders.ts";
import { type JobContext, type JobResult, resolveBlob } from "./job.ts";
import { type CustomDiffusionAdapter, weightsAsLora } from "../adapters/custom_diffusion.ts";
import { mergeCustomDiffusion } from "../methods/custom_diffusion_compose.ts";

/**
 * The optional prediction features every worker serves (it advertises them when it registers); a job using
 * another is refused rather than its field silently ignored. `reference_image` is added by `served.ts` when
 * every model of the worker has a SeeCoder.
 */
export const SERVED_PREDICTION_FEATURES: readonly PredictionFeature[] = [
  "img2img",
  "inpainting",
  "regions",
  "sliders",
];

/** A small preview: the image scaled so its longest side is at most `size`, as base64 PNG. */
export function previewPng(img: RgbImage, size: number): string {
  const k = Math.min(1, size / Math.max(img.width, img.height));
  const small = resizeBilinear(
    img,
    Math.max(1, Math.round(img.width * k)),
    Math.max(1, Math.round(img.height * k)),
  );
  return Buffer.from(encodePng(small)).toString("base64");
}

/** Adapter module paths must be LoRA slots of the base model (else the adapter would silently do nothing). */
function checkAdapterFits(pipe: StableDiffusionPipeline, id: string, use: AdapterUse) {
  const slots = new Set([
    ...pipe.loraModules.map((m) => m.path),
    ...pipe.textLoraModules.map((m) => m.path),
    ...pipe.servableLoraModules.keys(),
  ]);
  const foreign = [...use.lora.modules.keys()].filter((p) => !slots.has(p));
  if (foreign.length) {
    throw new AdapterError(
      `adapter "${id}" targets ${foreign.length} module(s) the base model has no LoRA slot for ` +
        `(e.g. ${foreign[0]}); it was trained for another base model`,
    );
  }
}

export async function predict(ctx: JobContext<LeasedPrediction>): Promise<JobResult> {
  const { job, lease, edge, engine, settings } = ctx;
  const input = job.input;
  const started = performance.now();
  const decodedAdapters = [];
  for (const [i, a] of input.adapters.entries()) {
    const ref = a.blob ?? resolveBlob(job, a.id, `input.adapters[${i}]`, "adapter");
    decodedAdapters.push({ ...a, decoded: await engine.adapter(ref, (r) => edge.getBlob(r)) });
  }
  // A full fine-tune is a whole model: the request runs on its pipeline (the other adapters ride on it).
  const full = decodedAdapters.filter((a) => a.decoded.kind === "full");
  const conflict = fullModelConflict(full);
  if (conflict) throw new JobInputError(conflict);
  const fullModel = full[0]?.decoded;
  const pipe = fullModel?.kind === "full"
    ? await engine.finetunedPipeline(job.baseModel, fullModel)
    : await engine.pipeline(job.baseModel);
  const adapters: AdapterUse[] = [];
  const concepts: { id: string; adapter: CustomDiffusionAdapter; sha256: string; scale: number }[] = [];
  for (const { decoded, ...a } of decodedAdapters) {
    if (decoded.kind === "full") continue;
    if (decoded.kind === "custom_diffusion") {
      concepts.push({ id: a.id, adapter: decoded.adapter, sha256: decoded.sha256, scale: a.scale });
      continue;
    }
    const use = { lora: decoded.lora, scale: a.scale };
    checkAdapterFits(pipe, a.id, use);
    adapters.push(use);
  }
  // Custom Diffusion concepts: one rides as its K/V change; several are merged in closed form (cached per set).
  let tokens: CustomDiffusionAdapter["tokens"] = [];
  if (concepts.length) {
    const on = fullModel?.kind === "full" ? `${job.baseModel}+${fullModel.sha256}` : job.baseModel;
    const key = `cd:${on}:${concepts.map((c) => c.sha256).sort().join(",")}`;
    const lora = await engine.cached(key, async () => {
      if (concepts.length === 1) {
        return {
          lora: weightsAsLora(concepts[0].id, concepts[0].adapter.layers, pipe.folder.weights.unet),
          merged: null,
        };
      }
      const m = await mergeCustomDiffusion(pipe, concepts.map((c) => c.adapter));
      lease.log(
        `merged ${m.stats.concepts} Custom Diffusion concepts in closed form (${m.stats.layers} layers, ` +
          `${Math.round(m.stats.ms)} ms)`,
      );
      return {
        lora: weightsAsLora(m.adapter.name, m.adapter.layers, pipe.folder.weights.unet),
        merged: m.adapter,
      };
    });
    const use = { lora: lora.lora, scale: concepts.reduce((s, c) => s + c.scale, 0) / concepts.length };
    checkAdapterFits(pipe, concepts[0].id, use);
    adapters.push(use);
    tokens = concepts.flatMap((c) => c.adapter.tokens);
  }
  // Sliders: LoRAs off while the timestep is above their start, all on the same slots (one UNet pass).
  for (const [i, s] of input.sliders.entries()) {
    const lora = await loraOnly(
      ctx,
      pipe,
      s.id,
      s.blob,
      `input.sliders[${i}]`,
      "not a slider (a LoRA); list it in input.adapters",
    );
    adapters.push({ lora, scale: sliderScale(s.scale, s.start_step ?? SLIDER_START_TIMESTEP) });
  }
  const regions = await regionSpecs(ctx, pipe, input.width, input.height);
  const image = input.image === undefined
    ? undefined
    : decodeImage(await edge.getBlob(resolveBlob(job, input.image, "input.image", "file")), "input.image");
  const mask = input.mask === undefined
    ? undefined
    : decodeMask(await edge.getBlob(resolveBlob(job, input.mask, "input.mask", "file")), "input.mask");
  const referenceImage = input.reference_image === undefined ? undefined : decodeImage(
    await edge.getBlob(resolveBlob(job, input.reference_image, "input.reference_image", "file")),
    "input.reference_image",
  );
  if (referenceImage) {
    if (input.negative_prompt) {
      lease.log("negative_prompt is ignored with reference_image: the unconditional context is zeros");
    }
    if (input.prompt.trim()) {
      lease.log("prompt is not read with reference_image: SeeCoder's embeddings replace it");
    }
  }

  let lastPreview = -Infinity;
  const result = await pipe.generate({
    prompt: input.prompt,
    negativePrompt: input.negative_prompt,
    n: input.num_outputs,
    steps: input.steps,
    guidanceScale: input.guidance_scale,
    referenceImage,
    guidanceRescale: input.guidance_rescale,
    scheduler: input.scheduler,
    seed: input.seed,
    width: input.width,
    height: input.height,
    image,
    strength: input.strength,
    mask,
    adapters,
    tokens,
    regions,
    signal: lease.signal,
    onStep: async ({ step, total, preview }) => {
      const elapsed = (performance.now() - started) / 1000;
      lease.progress({ step, total, eta_s: Math.round((elapsed / step) * (total - step) * 10) / 10 });
      const now = performance.now();
      if (
        step < total && step % settings.previewEvery === 0 && now - lastPreview >= settings.previewIntervalMs
      ) {
        lastPreview = now;
        lease.preview(previewPng((await preview())[0], settings.previewSize));
      }
    },
  });
  lease.log(
    `generated ${result.images.length} image(s) with seed ${result.seed} in ${
      (result.timings.totalMs / 1000).toFixed(2)
    }s`,
  );
  const outputs: JobResult["outputs"] = [];
  for (const [i, img] of result.images.entries()) {
    const blob = await edge.putBlob(encodePng(img), "image/png");
    outputs.push({ blob, contentType: "image/png", name: `out-${i}.png` });
  }
  return {
    outputs,
    metrics: {
      predict_time: Math.round((performance.now() - started) / 10) / 100,
      seed: result.seed,
      unet_evals: result.timings.unetEvals,
    },
  };
}

/**
 * The job's regions for the pipeline: boxes checked against the latent grid (a box that covers no latent
 * pixel is the input's fault), each region's adapters decoded (LoRA only: a Custom Diffusion concept or a full
 * model changes the whole model, not a region).
 */
async function regionSpecs(
  ctx: JobContext<LeasedPrediction>,
  pipe: StableDiffusionPipeline,
  width?: number,
  height?: number,
): Promise<RegionSpec[]> {
  const { job } = ctx;
  const input = job.input;
  if (!input.regions.length) return [];
  const f = pipe.folder;
  const side = f.unetConfig.sample_size;
  const h = (height ?? side * f.vaeScaleFactor) / f.vaeScaleFactor;
  const w = (width ?? side * f.vaeScaleFactor) / f.vaeScaleFactor;
  try {
    regionMasks(input.regions, 1, h, w);
  } catch (e) {
    throw new JobInputError(`input.${(e as Error).message}`);
  }
  const out: RegionSpec[] = [];
  for (const [i, r] of input.regions.entries()) {
    const adapters: AdapterUse[] = [];
    for (const [j, id] of (r.adapters ?? []).entries()) {
      const blob = input.region_adapters.find((a) => a.id === id)?.blob;
      const where = `input.regions[${i}].adapters[${j}]`;
      const lora = await loraOnly(
        ctx,
        pipe,
        id,
        blob,
        where,
        "regions take LoRA adapters (DreamBooth LoRA, sliders) only",
      );
      adapters.push({ lora, scale: 1 });
    }
    out.push({ box: r.box, prompt: r.prompt, adapters });
  }
  return out;
}

/**
 * A LoRA adapter of the job (sliders, region adapters): decoded from its blob, refused when it is another kind
 * (`why` says what was expected) or does not fit the base model.
 */
async function loraOnly(
  ctx: JobContext<LeasedPrediction>,
  pipe: StableDiffusionPipeline,
  id: string,
  blob: BlobRef | undefined,
  where: string,
  why: string,
): Promise<LoraWeights> {
  const ref = blob ?? resolveBlob(ctx.job, id, where, "adapter");
  const decoded = await ctx.engine.adapter(ref, (r) => ctx.edge.getBlob(r));
  if (decoded.kind !== "lora") {
    const what = decoded.kind === "full" ? "full model" : "Custom Diffusion";
    throw new JobInputError(`${where}: "${id}" is a ${what} adapter; ${why}`);
  }
  checkAdapterFits(pipe, id, { lora: decoded.lora, scale: 1 });
  return decoded.lora;
}
