/**
 * Command-line fine-tuning: LoRA or full fine-tuning of a diffusers model folder on a folder of images.
 *
 * Usage: deno task train --model models/tiny-shapes --images DIR --prompt "a sks star" --method lora
 *          --steps 200 --out DIR [--lr 1e-3] [--rank 4] [--alpha 4] [--batch 1] [--seed 0]
 *          [--checkpoint-every 50] [--resume] [--no-flip]
 * Writes DIR/pytorch_lora_weights.safetensors (lora) or a full model folder (full); prints progress.
 */
import { parseArgs } from "node:util";
import { EngineRunner } from "../gpu-worker/ort/runner.ts";
import { fineTune } from "../gpu-worker/training/finetune.ts";
import { numberFlag } from "./flags.ts";

const USAGE =
  `usage: deno task train --model DIR --images DIR --prompt TEXT --method lora|full --steps N --out DIR
  [--lr LR] [--rank R] [--alpha A] [--batch B] [--seed S] [--checkpoint-every N] [--resume] [--no-flip]`;

const num = (name: string, v: string | undefined) => numberFlag(name, v);

const OPTIONS = {
  model: { type: "string" },
  images: { type: "string" },
  prompt: { type: "string" },
  method: { type: "string" },
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

if (import.meta.main) {
  const values = flags(Deno.args);
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
      onProgress: (e) =>
        console.error(
          `step ${e.step}/${e.steps} loss ${e.loss.toFixed(4)} lr ${e.lr.toExponential(2)} ` +
            `${e.stepsPerSecond.toFixed(2)} steps/s eta ${e.etaSeconds.toFixed(0)}s`,
        ),
    });
    console.log(
      `wrote ${r.outputs.join(", ")}; ${r.trainedParameters} trained parameters; ` +
        `eval loss ${r.evalLoss.before.toFixed(4)} -> ${r.evalLoss.after.toFixed(4)}`,
    );
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    Deno.exitCode = 1;
  } finally {
    runner.terminate();
  }
  Deno.exit();
}
