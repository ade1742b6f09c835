/**
 * `deno task eval:subject`: DreamBooth's evaluation (Ruiz et al., 2023, Sec. 4.1 and Table 1) of a trained
 * subject. Generates `--per-prompt` images for each of the first `--prompts` of the paper's 25 object prompts
 * ("a {token} {class} in the jungle", ...) with a DreamBooth LoRA (`--adapter`) on the base model and/or a full
 * fine-tuned model folder (`--full`), then scores them against the subject's real images: DINO and CLIP-I
 * (subject fidelity) and CLIP-T (prompt fidelity), printed beside the paper's Table 1.
 *
 * The encoders are ONNX files in `<model>/eval/` (layout in `gpu-worker/eval/image_text_encoders.ts`); a model
 * without them gets "-" cells and a note naming the missing files. On a ShapesWorld model (`--shapesworld`, or a
 * `--model` path ending in `tiny-shapes`) the project's analytic subject fidelity
 * (`gpu-worker/eval/shapesworld_fidelity.ts`) is printed too. Bad arguments exit 2, other failures 1.
 *
 * Usage: deno task eval:subject --images DIR --adapter FILE and/or --full DIR [--model models/tiny-shapes]
 *          [--per-prompt 4] [--prompts 25] [--seed 0] [--steps N] [--guidance G] [--scale 1]
 *          [--token sks --class star] [--shapesworld] [--json OUT.json]
 *
 * @example
 * ```sh
 * deno task eval:subject --model models/tiny-shapes --images photos/ \
 *   --adapter out/star/pytorch_lora_weights.safetensors --json out/star/eval.json
 * ```
 */
import { parseArgs } from "node:util";
import { EngineRunner } from "../gpu-worker/ort/runner.ts";
import { StableDiffusionPipeline } from "../gpu-worker/pipelines/stable_diffusion.ts";
import type { AdapterUse } from "../gpu-worker/pipelines/stable_diffusion.ts";
import type { RgbImage } from "../gpu-worker/image/png.ts";
import { ImageLoadError, loadImageFolder } from "../gpu-worker/training/data.ts";
import {
  baseModelFacts,
  DREAMBOOTH_SCALE_DEFAULTS,
  type DreamBoothLora,
  loadDreamBoothLora,
  TINY_UNET_PARAMETERS,
} from "../gpu-worker/methods/dreambooth.ts";
import { EVAL_ENCODER_FILES, EvalEncoders } from "../gpu-worker/eval/image_text_encoders.ts";
import {
  DREAMBOOTH_OBJECT_PROMPTS,
  DREAMBOOTH_PAPER_TABLE,
  type FidelityRow,
  paperComparisonTable,
  subjectFidelity,
} from "../gpu-worker/eval/subject_fidelity.ts";
import {
  type FidelityScores,
  foregroundSimilarity,
  shapesWorldFidelity,
  subjectProfile,
} from "../gpu-worker/eval/shapesworld_fidelity.ts";
import { pathExists } from "../gpu-worker/fs.ts";
import { FlagError, numberFlag } from "./flags.ts";

const USAGE =
  `usage: deno task eval:subject --images DIR --adapter FILE and/or --full DIR [--model models/tiny-shapes]
  [--per-prompt 4] [--prompts 25] [--seed 0] [--steps N] [--guidance G] [--scale 1]
  [--token sks --class star] [--shapesworld] [--json OUT.json]`;

const DEFAULT_MODEL = "models/tiny-shapes";

/** A bad command line: exit 2 with the message and the usage. */
export class UsageError extends FlagError {
  override name = "UsageError";
}

const OPTIONS = {
  model: { type: "string" },
  adapter: { type: "string" },
  full: { type: "string" },
  images: { type: "string" },
  "per-prompt": { type: "string" },
  prompts: { type: "string" },
  seed: { type: "string" },
  steps: { type: "string" },
  guidance: { type: "string" },
  scale: { type: "string" },
  token: { type: "string" },
  class: { type: "string" },
  shapesworld: { type: "boolean" },
  json: { type: "string" },
  help: { type: "boolean" },
} as const;

/** The command line, checked for form (files are checked by {@link loadInputs}). */
export interface EvalSubjectArgs {
  model: string;
  adapter?: string;
  full?: string;
  images: string;
  perPrompt: number;
  prompts: number;
  seed: number;
  /** Undefined: the model scale's default (tiny: 20, SD: 50). */
  steps?: number;
  /** Undefined: the model scale's default (tiny: 5, SD: 7.5). */
  guidance?: number;
  scale: number;
  token?: string;
  classWord?: string;
  shapesWorld: boolean;
  json?: string;
  help: boolean;
}

const integer = (name: string, v: string | undefined, min: number, max: number) =>
  numberFlag(name, v, { integer: true, min, max });
const number = (name: string, v: string | undefined, min: number, max: number) =>
  numberFlag(name, v, { min, max });

/** Parses and checks the flags; throws UsageError naming what was expected and what came. */
export function parseEvalSubjectArgs(args: string[]): EvalSubjectArgs {
  let values;
  try {
    values = parseArgs({ args, options: OPTIONS, strict: true, allowPositionals: false }).values;
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const help = !!values.help;
  if (!help && !values.images) {
    throw new UsageError("--images is required: a folder of the subject's real images (PNG/JPEG), got none");
  }
  if (!help && !values.adapter && !values.full) {
    throw new UsageError(
      "expected --adapter FILE (a DreamBooth LoRA .safetensors) and/or --full DIR (a full fine-tuned model " +
        "folder), got neither",
    );
  }
  const model = values.model ?? DEFAULT_MODEL;
  for (const k of ["token", "class"] as const) {
    const v = values[k];
    if (v !== undefined && !/^\S+$/.test(v)) throw new UsageError(`--${k} expects one word, got "${v}"`);
  }
  return {
    model,
    adapter: values.adapter,
    full: values.full,
    images: values.images ?? "",
    perPrompt: integer("per-prompt", values["per-prompt"], 1, 16) ?? 4,
    prompts: integer("prompts", values.prompts, 1, DREAMBOOTH_OBJECT_PROMPTS.length) ??
      DREAMBOOTH_OBJECT_PROMPTS.length,
    seed: integer("seed", values.seed, 0, Number.MAX_SAFE_INTEGER - 1000) ?? 0,
    steps: integer("steps", values.steps, 1, 500),
    guidance: number("guidance", values.guidance, 0, 50),
    scale: number("scale", values.scale, -10, 10) ?? 1,
    token: values.token,
    classWord: values.class,
    shapesWorld: !!values.shapesworld || model.replace(/\/+$/, "").endsWith("tiny-shapes"),
    json: values.json,
    help,
  };
}

/**
 * The paper's first `count` object prompts with "{token} {class}" in place (the identifier stays in the
 * prompt CLIP-T embeds, as in the paper).
 *
 * @example
 * ```ts
 * subjectPrompts("sks", "star", 2); // ["a sks star in the jungle", "a sks star in the snow"]
 * ```
 */
export function subjectPrompts(token: string, classWord: string, count: number): string[] {
  const subject = `${token} ${classWord}`.trim();
  return DREAMBOOTH_OBJECT_PROMPTS.slice(0, count).map((p) => p.replace("{0}", subject));
}

/** Each encoder file `<model>/eval/` lacks, with the metrics it would give. */
export async function missingEncoders(modelDir: string): Promise<{ file: string; metrics: string }[]> {
  const wanted = [
    { file: EVAL_ENCODER_FILES.dino, metrics: "DINO", what: "DINO ViT-S/16" },
    { file: EVAL_ENCODER_FILES.clipImage, metrics: "CLIP-I, CLIP-T", what: "CLIPVisionModelWithProjection" },
    { file: EVAL_ENCODER_FILES.clipText, metrics: "CLIP-T", what: "CLIPTextModelWithProjection" },
  ];
  const out: { file: string; metrics: string }[] = [];
  for (const w of wanted) {
    if (!(await pathExists(`${modelDir}/eval/${w.file}`))) {
      out.push({ file: w.file, metrics: `${w.metrics} (${w.what})` });
    }
  }
  return out;
}

async function statKind(path: string): Promise<"file" | "folder" | null> {
  try {
    const s = await Deno.stat(path);
    return s.isDirectory ? "folder" : "file";
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

async function expectFolder(flag: string, path: string, what: string): Promise<void> {
  const kind = await statKind(path);
  if (kind !== "folder") {
    throw new UsageError(
      `--${flag}: expected ${what}, got "${path}" (${
        kind === "file" ? "a file, not a folder" : "not found"
      })`,
    );
  }
}

/** What the run needs, read and checked before any model is loaded. */
interface Inputs {
  real: RgbImage[];
  adapter: DreamBoothLora | null;
  token: string;
  classWord: string;
}

async function loadInputs(a: EvalSubjectArgs): Promise<Inputs> {
  await expectFolder("images", a.images, "a folder of the subject's real images (PNG/JPEG)");
  await expectFolder("model", a.model, "a diffusers model folder (model_index.json, unet/, ...)");
  if (a.full) {
    await expectFolder("full", a.full, "a full fine-tuned model folder (as DreamBooth full writes)");
  }
  let real: RgbImage[];
  try {
    real = (await loadImageFolder(a.images)).map((t) => t.image);
  } catch (e) {
    if (e instanceof ImageLoadError) throw new UsageError(`--images: ${e.message}`);
    throw e;
  }
  let adapter: DreamBoothLora | null = null;
  if (a.adapter) {
    const kind = await statKind(a.adapter);
    if (kind !== "file") {
      throw new UsageError(
        `--adapter: expected a DreamBooth LoRA .safetensors file, got "${a.adapter}" (${
          kind ? "a folder" : "not found"
        })`,
      );
    }
    try {
      adapter = loadDreamBoothLora(await Deno.readFile(a.adapter), a.adapter);
    } catch (e) {
      throw new UsageError(
        `--adapter: expected a DreamBooth LoRA .safetensors file: ${(e as Error).message}`,
      );
    }
  }
  // The subject's words: the flags, else the adapter's metadata, else the full run's dreambooth.json.
  let info: { token?: unknown; class_word?: unknown } = {};
  if (!adapter && a.full && await pathExists(`${a.full}/dreambooth.json`)) {
    try {
      info = JSON.parse(await Deno.readTextFile(`${a.full}/dreambooth.json`));
    } catch (e) {
      throw new UsageError(`--full: ${a.full}/dreambooth.json is not valid JSON (${(e as Error).message})`);
    }
  }
  const token = a.token ?? adapter?.token ?? (typeof info.token === "string" ? info.token : undefined);
  const classWord = a.classWord ?? adapter?.classWord ??
    (typeof info.class_word === "string" ? info.class_word : "");
  if (!token) {
    throw new UsageError(
      `--full: ${a.full}/dreambooth.json does not name the subject's token; give --token (and --class)`,
    );
  }
  return { real, adapter, token, classWord };
}

function fmt(v: number | null): string {
  return v === null ? "-" : v.toFixed(3);
}

/** Runs the evaluation; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  let a: EvalSubjectArgs, inputs: Inputs;
  try {
    a = parseEvalSubjectArgs(args);
    if (a.help) {
      console.log(USAGE);
      return 0;
    }
    inputs = await loadInputs(a);
  } catch (e) {
    if (!(e instanceof FlagError)) throw e;
    console.error(`error: ${e.message}\n${USAGE}`);
    return 2;
  }
  const { real, adapter, token, classWord } = inputs;
  const prompts = subjectPrompts(token, classWord, a.prompts);
  if (!classWord) {
    console.error(
      `note: no class word (the adapter or dreambooth.json names none): prompts read "${
        prompts[0]
      }"; give --class`,
    );
  }
  const missing = await missingEncoders(a.model);
  if (missing.length) {
    console.error(
      `note: ${a.model}/eval/ lacks ${missing.map((m) => m.file).join(", ")}, so these cells stay "-":\n` +
        missing.map((m) => `  ${m.file} -> ${m.metrics}\n`).join("") +
        `  Put the ONNX exports in ${a.model}/eval/ (clip_text.onnx with its tokenizer in ` +
        `${a.model}/eval/${EVAL_ENCODER_FILES.clipTokenizer}/; optional ${EVAL_ENCODER_FILES.config}); ` +
        `the layout is in gpu-worker/eval/image_text_encoders.ts.`,
    );
  }
  const anyEncoder = missing.length < 3;

  const runner = new EngineRunner();
  let pipe: StableDiffusionPipeline | null = null;
  let enc: EvalEncoders | null = null;
  try {
    let row: FidelityRow = { dino: null, clip_i: null, clip_t: null };
    let shapes: (FidelityScores & { foreground: number }) | null = null;
    let steps: number | null = null, guidance: number | null = null;
    const genDir = a.full ?? a.model;
    console.log(
      `subject "${`${token} ${classWord}`.trim()}": ${real.length} real images from ${a.images}; ` +
        `model ${genDir}${adapter ? ` + LoRA ${a.adapter} (scale ${a.scale})` : ""}`,
    );
    if (!anyEncoder && !a.shapesWorld) {
      console.error("note: nothing to measure without encoders; no images generated.");
    } else {
      pipe = await StableDiffusionPipeline.load(genDir, runner);
      const adapters: AdapterUse[] = adapter ? [{ lora: adapter.lora, scale: a.scale }] : [];
      if (adapter) {
        const paths = new Set([...pipe.loraModules, ...pipe.textLoraModules].map((m) => m.path));
        if (![...adapter.lora.modules.keys()].some((p) => paths.has(p))) {
          throw new UsageError(
            `--adapter: expected a LoRA for ${genDir}'s modules, got none of them in ${a.adapter} ` +
              `(trained for another base model?)`,
          );
        }
      }
      const scaleName = baseModelFacts(pipe.folder).unetParameters < TINY_UNET_PARAMETERS ? "tiny" : "sd";
      const d = DREAMBOOTH_SCALE_DEFAULTS[scaleName];
      steps = a.steps ?? d.classSamplingSteps;
      guidance = a.guidance ?? d.classGuidanceScale;
      console.log(
        `${prompts.length} prompts x ${a.perPrompt} images, ${steps} steps, guidance ${guidance}, ` +
          `seeds ${a.seed}..${a.seed + prompts.length - 1} (one per prompt)`,
      );
      const t0 = performance.now();
      const generated: RgbImage[] = [], imagePrompts: string[] = [];
      for (const [i, prompt] of prompts.entries()) {
        const r = await pipe.generate({
          prompt,
          n: a.perPrompt,
          seed: a.seed + i,
          steps,
          guidanceScale: guidance,
          adapters,
        });
        generated.push(...r.images);
        imagePrompts.push(...r.images.map(() => prompt));
      }
      console.log(
        `generated ${generated.length} images in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
      );
      await pipe.release();
      pipe = null;

      enc = await EvalEncoders.load(a.model, runner);
      row = await subjectFidelity(enc, { generated, real, prompts: imagePrompts });
      if (a.shapesWorld) {
        shapes = {
          ...shapesWorldFidelity(generated, real),
          foreground: foregroundSimilarity(generated, subjectProfile(real)),
        };
      }
    }
    console.log(`\nDreamBooth's metrics (Ruiz et al. 2023, Table 1; "-": not measured):\n`);
    console.log(paperComparisonTable({ "ours": row }));
    if (shapes) {
      console.log(
        `\nShapesWorld analytic fidelity (gpu-worker/eval/shapesworld_fidelity.ts, 1 = the subject itself): ` +
          `ours ${fmt(shapes.score)} (shape ${fmt(shapes.shape)}, colour ${fmt(shapes.colour)}, texture ` +
          `${fmt(shapes.texture)}, histogram ${fmt(shapes.histogram)}); foreground similarity ` +
          `${fmt(shapes.foreground)}`,
      );
    }
    if (a.json) {
      const report = {
        model: a.model,
        adapter: a.adapter ?? null,
        full: a.full ?? null,
        images: a.images,
        token,
        class_word: classWord,
        prompts,
        per_prompt: a.perPrompt,
        seed: a.seed,
        steps,
        guidance,
        scale: a.scale,
        missing_encoders: missing.map((m) => m.file),
        ours: row,
        paper: DREAMBOOTH_PAPER_TABLE,
        shapesworld: shapes && {
          score: shapes.score,
          shape: shapes.shape,
          colour: shapes.colour,
          texture: shapes.texture,
          histogram: shapes.histogram,
          foreground: shapes.foreground,
        },
      };
      await Deno.writeTextFile(a.json, JSON.stringify(report, null, 2) + "\n");
      console.log(`\nwrote ${a.json}`);
    }
    return 0;
  } catch (e) {
    if (e instanceof FlagError) {
      console.error(`error: ${e.message}\n${USAGE}`);
      return 2;
    }
    console.error(`error: ${(e as Error).message}`);
    return 1;
  } finally {
    await enc?.release();
    await pipe?.release();
    runner.terminate();
  }
}

if (import.meta.main) Deno.exitCode = await main(Deno.args);
