/**
 * Command-line fine-tuning: LoRA or full fine-tuning of a diffusers model folder on a folder of images.
 *
 * Usage: deno task train --model models/tiny-shapes --images DIR --prompt "a sks star" --method lora
 *          --steps 200 --out DIR [--lr 1e-3] [--rank 4] [--alpha 4] [--batch 1] [--seed 0]
 *          [--checkpoint-every 50] [--resume] [--no-flip] [--json]
 *        deno task train --model models/tiny-shapes --method concept_slider --config slider.json --out DIR
 *          [--pairs DIR] [--steps N] [--lr LR] [--seed S] [--json]
 * Writes DIR/pytorch_lora_weights.safetensors (lora, concept_slider) or a full model folder (full). A
 * progress bar (step, loss, rate, ETA) on a terminal; `--json`: progress and the result as JSON lines. A
 * slider's --config is the API's `concept_slider` input (JSON); --pairs makes it a visual slider from a folder
 * with verylow/ low/ high/ veryhigh/ images paired by file name.
 */
import { parseArgs } from "node:util";
import { EngineRunner } from "../gpu-worker/ort/runner.ts";
import { fineTune } from "../gpu-worker/training/finetune.ts";
import { numberFlag } from "./flags.ts";
import { Progress, progressMode } from "./progress.ts";
import { ConceptSliderInput } from "../shared/methods/concept_slider.ts";
import { conceptSlider } from "../gpu-worker/methods/concept_slider.ts";
import { folderPairs } from "../gpu-worker/methods/slider_folders.ts";

const USAGE =
  `usage: deno task train --model DIR --images DIR --prompt TEXT --method lora|full --steps N --out DIR
  [--lr LR] [--rank R] [--alpha A] [--batch B] [--seed S] [--checkpoint-every N] [--resume] [--no-flip] [--json]
       deno task train --model DIR --method concept_slider --config SLIDER.json --out DIR [--pairs DIR]
  [--steps N] [--lr LR] [--seed S] [--json]`;

const num = (name: string, v: string | undefined) => numberFlag(name, v);

const OPTIONS = {
  model: { type: "string" },
  images: { type: "string" },
  prompt: { type: "string" },
  method: { type: "string" },
  config: { type: "string" },
  pairs: { type: "string" },
  steps: { type: "string" },
  out: { type: "string" },
  lr: { type: "string" },
  rank: { type: "string" },
  alpha: { type: "string" },
  batch: { type: "string" },
  seed: { type: "string" },
  "checkpoint-every": { type: "string" },
  resume: { type: "boolean" },
  "no-flip": { type: "boolean" },
  json: { type: "boolean" },
  help: { type: "boolean" },
} as const;

/** The flags; an unknown flag or a missing value is a usage error (exit 2), not an uncaught exception. */
function flags(args: string[]) {
  try {
    return parseArgs({ args, options: OPTIONS }).values;
  } catch (e) {
    console.error(`error: ${(e as Error).message}\n${USAGE}`);
    Deno.exit(2);
  }
}

/** The bar (a terminal), JSON lines (--json) or nothing; per-step figures from the training loop. */
function reporter(values: ReturnType<typeof flags>) {
  const p = new Progress("train", progressMode(values.json));
  const update = (
    e: { step: number; steps: number; loss: number; stepsPerSecond: number; etaSeconds: number },
  ) =>
    p.update({
      step: e.step,
      total: e.steps,
      loss: e.loss,
      stepsPerSecond: e.stepsPerSecond,
      etaSeconds: e.etaSeconds,
    });
  return { p, update };
}

/** The result: a JSON line (--json) or the text line. */
function report(
  p: Progress,
  outputs: string[],
  r: { trainedParameters: number; evalLoss: { before: number; after: number } },
) {
  if (p.result({ outputs, trained_parameters: r.trainedParameters, eval_loss: r.evalLoss })) return;
  console.log(
    `wrote ${outputs.join(", ")}; ${r.trainedParameters} trained parameters; ` +
      `eval loss ${r.evalLoss.before.toFixed(4)} -> ${r.evalLoss.after.toFixed(4)}`,
  );
}

function failed(e: unknown) {
  console.error(`error: ${(e as Error).message}`);
  Deno.exitCode = 1;
}

/** `--method concept_slider`: the API's input from --config, pairs from --pairs; exit 2 on a bad config. */
async function trainSlider(values: ReturnType<typeof flags>) {
  if (!values.model || !values.config || !values.out) {
    console.error(USAGE);
    Deno.exit(2);
  }
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(await Deno.readTextFile(values.config));
  } catch (e) {
    console.error(`error: --config ${values.config}: ${(e as Error).message}`);
    Deno.exit(2);
  }
  const pairsDir = values.pairs;
  const parsed = ConceptSliderInput.safeParse({
    ...raw,
    ...(pairsDir ? { kind: "visual", images: "pairs" } : {}),
    ...(values.steps ? { steps: num("steps", values.steps) } : {}),
    ...(values.lr ? { learning_rate: num("lr", values.lr) } : {}),
    ...(values.seed ? { seed: num("seed", values.seed) } : {}),
  });
  if (!parsed.success) {
    const why = parsed.error.issues.map((i) => `${i.path.join(".") || "config"}: ${i.message}`).join("; ");
    console.error(`error: --config ${values.config}: ${why}`);
    Deno.exit(2);
  }
  const { images: _images, pairs: _ids, ...config } = parsed.data;
  const runner = new EngineRunner();
  const ac = new AbortController();
  Deno.addSignalListener("SIGINT", () => ac.abort());
  const rep = reporter(values);
  try {
    const pairs = pairsDir ? await folderPairs(pairsDir) : undefined;

    const r = await conceptSlider(runner, {
      model: values.model,
      out: values.out,
      config,
      pairs,
      signal: ac.signal,
      onProgress: rep.update,
      onLog: (line) => rep.p.log(line),
    });
    report(rep.p, [r.file], r);
  } catch (e) {
    failed(e);
  } finally {
    runner.terminate();
  }
  Deno.exit();
}

if (import.meta.main) {
  const values = flags(Deno.args);
  if (values.method === "concept_slider") await trainSlider(values);
  if (
    values.help || !values.model || !values.images || values.prompt === undefined || !values.out ||
    !values.steps
  ) {
    console.error(USAGE);
    Deno.exit(values.help ? 0 : 2);
  }
  const runner = new EngineRunner();
  const ac = new AbortController();
  Deno.addSignalListener("SIGINT", () => ac.abort());
  const rep = reporter(values);
  try {
    const r = await fineTune(runner, {
      model: values.model,
      images: values.images,
      prompt: values.prompt,
      method: (values.method ?? "lora") as "lora",
      steps: num("steps", values.steps)!,
      out: values.out,
      learningRate: num("lr", values.lr),
      rank: num("rank", values.rank),
      alpha: num("alpha", values.alpha),
      batchSize: num("batch", values.batch),
      seed: num("seed", values.seed),
      checkpointEvery: num("checkpoint-every", values["checkpoint-every"]),
      resume: values.resume,
      randomFlip: !values["no-flip"],
      signal: ac.signal,
      onProgress: rep.update,
    });
    report(rep.p, r.outputs, r);
  } catch (e) {
    failed(e);
  } finally {
    runner.terminate();
  }
  Deno.exit();
}
