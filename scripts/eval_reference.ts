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
import { encodePng, type RgbImage } from "../gpu-worker/image/png.ts";
import { renderScene } from "../gpu-worker/shapesworld/render.ts";

const { values } = parseArgs({
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

/** Rows of images side by side (each row: reference, then one column per mode). */
function sheet(rows: RgbImage[][]): RgbImage {
  const s = 64, cols = rows[0].length;
  const rgb = new Uint8Array(cols * s * rows.length * s * 3);
  rows.forEach((row, r) =>
    row.forEach((img, c) => {
      for (let y = 0; y < s; y++) {
        for (let x = 0; x < s; x++) {
          for (let k = 0; k < 3; k++) {
            rgb[(((r * s + y) * cols * s) + c * s + x) * 3 + k] = img.rgb[(y * s + x) * 3 + k];
          }
        }
      }
    })
  );
  return { width: cols * s, height: rows.length * s, rgb };
}

const runner = new EngineRunner();
try {
  const pipe = await StableDiffusionPipeline.load(values.model ?? "models/tiny-shapes", runner);
  const t0 = performance.now();
  const modes = (values.modes ?? "reference,zeros,text").split(",") as ReferenceMode[];
  const r = await evaluateReferenceFidelity(pipe, {
    count: Number(values.count ?? 100),
    seed: Number(values.seed ?? 1),
    steps: Number(values.steps ?? 20),
    guidanceScale: values.guidance ? Number(values.guidance) : undefined,
    textGuidanceScale: values["text-guidance"] ? Number(values["text-guidance"]) : undefined,
    modes,
    keepImages: !!values.sheet,
  });
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
    await Deno.writeFile(values.sheet, encodePng(sheet(rows)));
  }
} finally {
  runner.terminate();
}
