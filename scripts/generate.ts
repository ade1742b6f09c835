/**
 * Command-line generation: txt2img, img2img or inpainting (`--mask`) on a diffusers model folder, with a progress bar on a terminal
 * (`--json`: progress and the result as JSON lines; `scripts/progress.ts`).
 *
 * Usage: deno task generate --model models/tiny-shapes --prompt "a red circle" --seed 1 --steps 20 --out out.png
 *   [--negative "..."] [--scheduler ddim|ddpm|euler|euler_a|dpmpp_2m] [--guidance 7.5] [--n 1]
 *   [--width W --height H] [--image in.png [--strength 0.8] [--mask mask.png]] [--ep cpu|cuda|webgpu]
 *   [--slider FILE.safetensors [--scale S | --grid=-2,-1,0,1,2] [--slider-start 800]] [--json]
 * With --n > 1, images are written as out-0.png, out-1.png, ... With --grid, one PNG holds the same seed at
 * each slider scale, left to right (a slider grid); with --n N as well, N rows, seeds seed..seed+N-1.
 */
import { parseArgs } from "node:util";
import { Progress, progressMode } from "./progress.ts";
import { EngineRunner } from "../gpu-worker/ort/runner.ts";
import { StableDiffusionPipeline } from "../gpu-worker/pipelines/stable_diffusion.ts";
import { decodePng, encodePng } from "../gpu-worker/image/png.ts";
import { decodeMask } from "../gpu-worker/image/mask.ts";
import type { SchedulerName } from "../gpu-worker/schedulers/scheduler.ts";
import type { ExecutionProvider } from "../gpu-worker/ort/session.ts";
import { numberFlag } from "./flags.ts";
import { decodeLora, toLoraWeights } from "../gpu-worker/adapters/lora.ts";
import { imageGrid, SLIDER_START_TIMESTEP, sliderScale } from "../gpu-worker/pipelines/sliders.ts";

const USAGE = `usage: deno task generate --model DIR --prompt TEXT [--seed N] [--steps N] [--out FILE.png]
  [--negative TEXT] [--scheduler NAME] [--guidance G] [--n N] [--width W] [--height H]
  [--image FILE.png [--strength S] [--mask FILE.png]] [--ep cpu|cuda|webgpu]
  [--slider FILE.safetensors [--scale S | --grid=S1,S2,...] [--slider-start T]] [--json]`;

const num = (name: string, v: string | undefined) => numberFlag(name, v);

async function main() {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      model: { type: "string" },
      prompt: { type: "string" },
      negative: { type: "string" },
      seed: { type: "string" },
      steps: { type: "string" },
      scheduler: { type: "string" },
      guidance: { type: "string" },
      n: { type: "string" },
      width: { type: "string" },
      height: { type: "string" },
      image: { type: "string" },
      strength: { type: "string" },
      mask: { type: "string" },
      out: { type: "string" },
      ep: { type: "string" },
      slider: { type: "string" },
      scale: { type: "string" },
      grid: { type: "string" },
      "slider-start": { type: "string" },
      json: { type: "boolean" },
      help: { type: "boolean" },
    },
  });
  if (values.help || !values.model || values.prompt === undefined) {
    console.error(USAGE);
    Deno.exit(values.help ? 0 : 2);
  }
  const runner = new EngineRunner();
  try {
    const t0 = performance.now();
    const pipe = await StableDiffusionPipeline.load(values.model, runner, {
      ep: (values.ep ?? "cpu") as ExecutionProvider,
    });
    const loadS = (performance.now() - t0) / 1000;
    const image = values.image ? decodePng(await Deno.readFile(values.image)) : undefined;
    const mask = values.mask ? decodeMask(await Deno.readFile(values.mask), values.mask) : undefined;
    const progress = new Progress("generate", progressMode(values.json));
    const slider = values.slider
      ? toLoraWeights(decodeLora(await Deno.readFile(values.slider), values.slider))
      : null;
    const start = num("slider-start", values["slider-start"]) ?? SLIDER_START_TIMESTEP;
    const options = {
      prompt: values.prompt,
      negativePrompt: values.negative,
      seed: num("seed", values.seed) ?? 0,
      steps: num("steps", values.steps),
      scheduler: values.scheduler as SchedulerName | undefined,
      guidanceScale: num("guidance", values.guidance),
      width: num("width", values.width),
      height: num("height", values.height),
      image,
      strength: num("strength", values.strength),
      mask,
    };
    if (slider && values.grid) {
      const scales = values.grid.split(",").map((x) => num("grid", x.trim())!);
      const seeds = Array.from({ length: num("n", values.n) ?? 1 }, (_, i) => options.seed + i);
      const rows = [];
      for (const seed of seeds) {
        const row = [];
        for (const s of scales) {
          const r = await pipe.generate({
            ...options,
            seed,
            adapters: [{ lora: slider, scale: sliderScale(s, start) }],
          });
          row.push(r.images[0]);
          progress.update({
            step: rows.length * scales.length + row.length,
            total: seeds.length * scales.length,
          });
        }
        rows.push(row);
      }
      const out = values.out ?? "grid.png";
      await Deno.writeFile(out, encodePng(imageGrid(rows)));
      if (!progress.result({ outputs: [out], scales, seeds })) {
        console.log(
          `wrote ${out}: scales ${scales.join(", ")} left to right` +
            (seeds.length > 1 ? `, seeds ${seeds[0]}..${seeds[seeds.length - 1]} top to bottom` : ""),
        );
      }
      return;
    }
    const result = await pipe.generate({
      ...options,
      n: num("n", values.n),
      adapters: slider ? [{ lora: slider, scale: sliderScale(num("scale", values.scale) ?? 1, start) }] : [],
      onStep: ({ step, total }) => progress.update({ step, total }),
    });
    progress.end();
    const out = values.out ?? "out.png";
    const paths = result.images.length === 1
      ? [out]
      : result.images.map((_, i) => out.replace(/(\.png)?$/i, `-${i}.png`));
    for (let i = 0; i < paths.length; i++) await Deno.writeFile(paths[i], encodePng(result.images[i]));
    const done = {
      outputs: paths,
      seed: result.seed,
      load_s: loadS,
      generate_s: result.timings.totalMs / 1000,
    };
    if (!progress.result(done)) {
      console.log(
        `wrote ${paths.join(", ")} (seed ${result.seed}; load ${loadS.toFixed(2)}s, generate ${
          (result.timings.totalMs / 1000).toFixed(2)
        }s)`,
      );
    }
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    Deno.exitCode = 1;
  } finally {
    runner.terminate();
  }
}

if (import.meta.main) await main();
