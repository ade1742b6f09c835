/**
 * Prompt-Free generation on the tiny model: how often the variation of a held-out render keeps its background
 * colour, object colour and shape, against zero embeddings and against the text prompt that describes the
 * render (`gpu-worker/eval/reference_fidelity.ts`). Prints one line per mode and writes nothing.
 *
 * Usage: deno run -A scripts/eval_reference.ts [--model models/tiny-shapes] [--count 100] [--seed 1]
 *          [--guidance 2] [--text-guidance 3] [--steps 20] [--modes reference,zeros,text] [--sheet out.png]
 */
import { parseArgs } from "node:util";
import { EngineRunner } from "../gpu-worker/ort/runner.ts";
import { StableDiffusionPipeline } from "../gpu-worker/pipelines/stable_diffusion.ts";
import { evaluateReferenceFidelity, type ReferenceMode } from "../gpu-worker/eval/reference_fidelity.ts";
import { encodePng } from "../gpu-worker/image/png.ts";
import { imageGrid } from "../gpu-worker/pipelines/sliders.ts";
import { FlagError, numberFlag } from "./flags.ts";
import { renderScene } from "../gpu-worker/shapesworld/render.ts";

function parseFlags() {
  try {
    return parseArgs({
      args: Deno.args,
      options: {
        model: { type: "string" },
        count: { type: "string" },
        seed: { type: "string" },
        guidance: { type: "string" },
        "text-guidance": { type: "string" },
        steps: { type: "string" },
        modes: { type: "string" },
        sheet: { type: "string" },
      },
    });
  } catch (e) {
    // Unknown flags and missing values are parseArgs' TypeErrors: a bad command line, exit 2.
    console.error(`error: ${(e as Error).message}`);
    Deno.exit(2);
  }
}
const { values } = parseFlags();

const MODES: readonly ReferenceMode[] = ["reference", "zeros", "text"];
const int = (name: string, v: string | undefined, fallback: number, min = 1) =>
  numberFlag(name, v, { integer: true, min }) ?? fallback;
let options;
try {
  const modes = (values.modes ?? MODES.join(",")).split(",");
  const unknown = modes.filter((m) => !MODES.includes(m as ReferenceMode));
  if (unknown.length || !modes.length) {
    throw new FlagError(
      `--modes expects a comma-separated list of ${MODES.join(", ")}, got "${values.modes}"`,
    );
  }
  options = {
    count: int("count", values.count, 100),
    seed: int("seed", values.seed, 1, 0),
    steps: int("steps", values.steps, 20),
    guidanceScale: numberFlag("guidance", values.guidance, { min: 0 }),
    textGuidanceScale: numberFlag("text-guidance", values["text-guidance"], { min: 0 }),
    modes: modes as ReferenceMode[],
    keepImages: !!values.sheet,
  };
} catch (e) {
  if (!(e instanceof FlagError)) throw e;
  console.error(`error: ${e.message}`);
  Deno.exit(2);
}

const runner = new EngineRunner();
try {
  const pipe = await StableDiffusionPipeline.load(values.model ?? "models/tiny-shapes", runner);
  const t0 = performance.now();
  const modes = options.modes;
  const r = await evaluateReferenceFidelity(pipe, options);
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  for (const m of modes) {
    const x = r[m]!;
    console.log(
      `${m.padEnd(9)} background ${pct(x.rates.background)} colour ${pct(x.rates.colour)} ` +
        `shape ${pct(x.rates.shape)}  mean |pixel - reference| ${x.pixelDistance.toFixed(1)}`,
    );
  }
  console.log(`${r.count} held-out references, ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  if (values.sheet) {
    const rows = r.scenes.slice(0, 12).map((
      sc,
      i,
    ) => [renderScene(sc, 64), ...modes.map((m) => r[m]!.images![i])]);
    await Deno.writeFile(values.sheet, encodePng(imageGrid(rows)));
  }
} finally {
  runner.terminate();
}
