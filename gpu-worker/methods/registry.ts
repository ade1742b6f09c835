/**
 * The method registry, worker part: each training and merge method this worker runs, by the name of its
 * shared entry (`shared/methods.ts`: schema, defaults, price, adapter kind). A run takes the leased job, its
 * input already parsed with the method's `work` schema, and maps it onto the method (`methods/<method>.ts`)
 * inside the training frame (`jobs/training_run.ts`: checkpoints, progress, resume); it returns the output
 * file and the descriptor of the adapter it made. What is registered here is what the worker advertises when
 * it registers (`methods`, `merges`), so the edge refuses what no worker runs before it charges for it.
 *
 * @example
 * ```ts
 * const run = TRAINING_RUNS[job.method]; // undefined: not served here
 * const { outputs, adapter } = await run!(ctx);
 * ```
 */
import type { AdapterDescriptor } from "../../shared/adapters.ts";
import type { MergeMethod, TrainingMethod } from "../../shared/methods.ts";
import type { LeasedMerge, LeasedTraining } from "../../shared/worker_protocol.ts";
import { LORA_FILE_NAME } from "../adapters/lora.ts";
import { encodeFullCheckpoint, FULL_CHECKPOINT_FILE_NAME } from "../adapters/full_checkpoint.ts";
import { encodeCustomDiffusion } from "../adapters/custom_diffusion.ts";
import { AdapterError } from "../input_error.ts";
import { type JobContext, type JobResult, resolveBlob } from "../jobs/job.ts";
import { loadImages, SAFETENSORS, trainingRun } from "../jobs/training_run.ts";
import { dreamBooth, type DreamBoothResult } from "./dreambooth.ts";
import { customDiffusion } from "./custom_diffusion.ts";
import { conceptSlider, type SliderPair } from "./concept_slider.ts";
import { decodeImage } from "../training/data.ts";
import { mergeCustomDiffusion } from "./custom_diffusion_compose.ts";

/** Runs a leased training of method M. */
export type TrainingRun<M extends TrainingMethod> = (
  ctx: JobContext<LeasedTraining<M>>,
) => Promise<JobResult>;
/** Runs a leased merge. */
export type MergeRun = (ctx: JobContext<LeasedMerge>) => Promise<JobResult>;

/** The file name of a Custom Diffusion adapter (training or merge): weights under diffusers' names + tokens. */
export const CUSTOM_DIFFUSION_OUTPUT_NAME = "custom_diffusion.safetensors";

/** DreamBooth: LoRA (or, `mode: "full"`, every UNet weight) on the images, with prior preservation. */
const runDreamBooth: TrainingRun<"dreambooth"> = async (ctx) => {
  const { job, lease, edge, engine, settings } = ctx;
  const { images: names, captions, destination: _name, ...config } = job.input;
  const images = await loadImages(ctx, names, captions);
  const captioned = images.filter((i) => i.caption !== null).length;
  const what = config.mode === "full"
    ? `every UNet weight${config.train_text_encoder ? " and the text encoder" : ""}`
    : `a rank-${config.rank} LoRA`;
  const prompt = `a ${config.token} ${config.class_word ?? ""}`.trim();
  lease.log(
    `training ${what} on ${images.length} image(s) (${captioned} captioned), "${prompt}", ` +
      `${config.steps} steps (dreambooth)`,
  );
  return await trainingRun(ctx, config.steps, async (run) => {
    const r: DreamBoothResult = await dreamBooth(engine.runner, {
      model: engine.modelDir(job.baseModel),
      images,
      config,
      ...run.options,
      cacheDir: settings.workDir,
      onLog: (line) => lease.log(line),
    });
    const c = r.config;
    const prior: Record<string, number> = c.with_prior_preservation
      ? {
        prior_preservation: 1,
        prior_loss_weight: c.prior_loss_weight,
        class_images_generated: r.classImages.generated,
        class_images_cached: r.classImages.reused,
      }
      : { prior_preservation: 0 };
    const adapter: AdapterDescriptor = {
      kind: "concept",
      method: "dreambooth",
      tokens: [c.token],
      class_word: c.class_word || null,
      full_model: c.mode === "full",
    };
    if (c.mode === "full") {
      // The model folder the method wrote, as one stored file (unet.* and text_encoder.* tensors).
      const bytes = await encodeFullCheckpoint(run.options.out, {
        withTextEncoder: c.train_text_encoder,
        info: {
          method: "dreambooth",
          mode: "full",
          token: c.token,
          class_word: c.class_word,
          instance_prompt: c.instance_prompt,
          base_model: job.baseModel,
          training_config: c,
        },
      });
      const blob = await edge.putBlob(bytes, SAFETENSORS);
      return {
        output: { blob, contentType: SAFETENSORS, name: FULL_CHECKPOINT_FILE_NAME },
        result: r,
        metrics: { ...prior, weights_bytes: bytes.byteLength },
        adapter,
      };
    }
    const bytes = await Deno.readFile(`${run.options.out}/${LORA_FILE_NAME}`);
    const blob = await edge.putBlob(bytes, SAFETENSORS);
    return {
      output: { blob, contentType: SAFETENSORS, name: LORA_FILE_NAME },
      result: r,
      metrics: prior,
      adapter,
    };
  });
};

/** Custom Diffusion: one concept or several (joint); the output is the adapter bundle. */
const runCustomDiffusion: TrainingRun<"custom_diffusion"> = async (ctx) => {
  const { job, lease, edge, engine, settings } = ctx;
  const { images, concepts, regularization_images, captions, destination: _name, ...config } = job.input;
  const regularization = regularization_images === undefined
    ? undefined
    : await loadImages(ctx, regularization_images, captions, "input.regularization_images");
  const specs = concepts
    ? await Promise.all(concepts.map(async (k, i) => ({
      images: await loadImages(ctx, k.images, captions, `input.concepts[${i}].images`),
      modifier_token: k.modifier_token,
      class_word: k.class_word,
      regularization,
    })))
    : [{
      images: await loadImages(ctx, images!, captions),
      modifier_token: config.modifier_token,
      class_word: config.class_word ?? "",
      regularization,
    }];
  return await trainingRun(ctx, config.steps, async (run) => {
    const r = await customDiffusion(engine.runner, {
      model: engine.modelDir(job.baseModel),
      concepts: specs,
      config,
      ...run.options,
      cacheDir: settings.workDir,
      onLog: (line) => lease.log(line),
    });
    const blob = await edge.putBlob(await Deno.readFile(r.adapterFile), SAFETENSORS);
    return {
      output: { blob, contentType: SAFETENSORS, name: CUSTOM_DIFFUSION_OUTPUT_NAME },
      result: r,
      metrics: {
        concepts: specs.length,
        prior_preservation: r.config.with_prior_preservation ? 1 : 0,
        class_images_generated: r.classImages.generated,
        class_images_cached: r.classImages.reused,
        weights_bytes: r.size.stored,
        weights_bytes_uncompressed: r.size.full,
      },
      adapter: {
        kind: "concept",
        method: "custom_diffusion",
        tokens: r.config.concepts.map((k) => k.modifier_token),
        class_word: r.config.concepts[0]?.class_word || null,
        full_model: false,
      },
    };
  });
};

/**
 * Custom Diffusion's closed-form merge of separately trained concepts (`methods/custom_diffusion_compose.ts`):
 * each concept's prompt features map as its own weights map them (`mode: "exact"`: the target words exactly;
 * default `sequence`: every position of its prompts, as a strong penalty), everything else stays as close to
 * the base model as the constraints allow. The output keeps every concept's modifier token.
 */
const runCustomDiffusionMerge: MergeRun = async (ctx) => {
  const { job, lease, edge, engine } = ctx;
  const input = job.input;
  const started = performance.now();
  const pipe = await engine.pipeline(job.baseModel);
  const adapters = [];
  for (const [i, a] of input.adapters.entries()) {
    if (a.weight !== 1) {
      throw new AdapterError(
        `adapters[${i}].weight ${a.weight}: the closed-form merge has no weights (each concept is kept exactly)`,
      );
    }
    const ref = a.blob ?? resolveBlob(job, a.id, `adapters[${i}]`, "adapter");
    const decoded = await engine.adapter(ref, (r) => edge.getBlob(r));
    if (decoded.kind !== "custom_diffusion") {
      const what = decoded.kind === "full" ? "a full fine-tune (a whole model)" : "a LoRA";
      throw new AdapterError(
        `adapters[${i}] ("${a.name ?? a.id}") is ${what}, not a Custom Diffusion adapter`,
      );
    }
    adapters.push({ ...decoded.adapter, name: a.name ?? decoded.adapter.name });
  }
  const m = await mergeCustomDiffusion(pipe, adapters, { name: input.destination, mode: input.mode });
  lease.log(
    `merged ${m.stats.concepts} concepts (${m.adapter.tokens.map((t) => t.token).join(", ")}) over ` +
      `${m.stats.layers} layers: ${m.stats.targetRows} target rows, ${m.stats.regularizationRows} ` +
      `regularization rows, ${Math.round(m.stats.ms)} ms`,
  );
  const blob = await edge.putBlob(encodeCustomDiffusion(m.adapter), SAFETENSORS);
  return {
    outputs: [{ blob, contentType: SAFETENSORS, name: CUSTOM_DIFFUSION_OUTPUT_NAME }],
    metrics: {
      concepts: m.stats.concepts,
      layers: m.stats.layers,
      target_rows: m.stats.targetRows,
      regularization_rows: m.stats.regularizationRows,
      merge_time: Math.round((performance.now() - started) / 10) / 100,
    },
    adapter: {
      kind: "concept",
      method: "merge:custom_diffusion",
      tokens: m.adapter.tokens.map((t) => t.token),
      // Each concept keeps its own class word; the merged adapter has none of its own.
      class_word: null,
      full_model: false,
    },
  };
};

/**
 * Concept Sliders: a text slider from its prompts (no images), or a visual one from image pairs; the output is
 * a LoRA file (the slider) with its prompts and train method in the metadata.
 */
const runConceptSlider: TrainingRun<"concept_slider"> = async (ctx) => {
  const { job, lease, edge, engine } = ctx;
  const { pairs: pairNames, images: _images, captions: _captions, destination: _name, ...config } = job.input;
  const pairs: SliderPair[] = [];
  for (const [i, p] of (pairNames ?? []).entries()) {
    const load = async (name: string, side: "low" | "high") => {
      const at = `input.pairs[${i}].${side}`;
      return decodeImage(await edge.getBlob(resolveBlob(job, name, at, "file")), `${at} (${name})`);
    };
    pairs.push({ low: await load(p.low, "low"), high: await load(p.high, "high"), scale: p.scale });
  }
  lease.log(
    config.kind === "visual"
      ? `training a visual slider from ${pairs.length} pair(s), ${config.steps} steps (concept_slider)`
      : `training a text slider "${config.negative ?? ""}" <-> "${config.positive}" on "${config.target}", ` +
        `${config.steps} steps (concept_slider)`,
  );
  return await trainingRun(ctx, config.steps, async (run) => {
    const r = await conceptSlider(engine.runner, {
      model: engine.modelDir(job.baseModel),
      config,
      pairs,
      ...run.options,
      onLog: (line) => lease.log(line),
    });
    const bytes = await Deno.readFile(r.file);
    const blob = await edge.putBlob(bytes, SAFETENSORS);
    return {
      output: { blob, contentType: SAFETENSORS, name: LORA_FILE_NAME },
      result: r,
      metrics: { pairs: pairs.length, lora_modules: r.adapter.modules.size },
      adapter: { kind: "slider", method: "concept_slider", tokens: [], class_word: null, full_model: false },
    };
  });
};

/** Training methods this worker runs, by shared registry name (not yet: cidm). */
export const TRAINING_RUNS: { readonly [M in TrainingMethod]?: TrainingRun<M> } = {
  dreambooth: runDreamBooth,
  custom_diffusion: runCustomDiffusion,
  concept_slider: runConceptSlider,
};

/** Merge methods this worker runs (the others: linear, cidm). */
export const MERGE_RUNS: { readonly [M in MergeMethod]?: MergeRun } = {
  custom_diffusion: runCustomDiffusionMerge,
};

/** The training methods this worker runs, as it advertises them. */
export const servedTrainingMethods = (): TrainingMethod[] => Object.keys(TRAINING_RUNS) as TrainingMethod[];
/** The merge methods this worker runs, as it advertises them. */
export const servedMergeMethods = (): MergeMethod[] => Object.keys(MERGE_RUNS) as MergeMethod[];
