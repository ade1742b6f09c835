/**
 * `deno task eval`: prompt following of a ShapesWorld model on held-out attribute combinations, measured by
 * analytic checks (background colour, object colour, shape), for BENCHMARKS.md. Optionally writes a contact
 * sheet of the generated images.
 *
 * Usage: deno task eval [--model models/tiny-shapes] [--count 200] [--seed 1] [--steps 20] [--guidance 3]
 *          [--guidance-rescale 0]
 *          [--sheet out.png] [--recon] [--json]
 * `--recon` measures the VAE alone instead: the held-out scenes rendered, encoded and decoded, then analyzed the
 * same way (the ceiling generation cannot pass). A progress bar on a terminal; `--json`: progress and the result
 * (the rates) as JSON lines.
 */
import { parseArgs } from "node:util";
import { EngineRunner } from "../gpu-worker/ort/runner.ts";
import { StableDiffusionPipeline } from "../gpu-worker/pipelines/stable_diffusion.ts";
import {
  evaluatePromptFollowing,
  evaluateReconstruction,
  type PromptFollowingSample as Sample,
} from "../gpu-worker/eval/prompt_following.ts";
import { isHeldOutShapeColour } from "../gpu-worker/shapesworld/world.ts";
import { encodePng } from "../gpu-worker/image/png.ts";
import { Progress, progressMode } from "./progress.ts";
import { FlagError, numberFlag } from "./flags.ts";

/** The generated images, ten to a row. */
async function writeSheet(path: string, samples: Sample[]) {
  const cols = 10, rows = Math.ceil(samples.length / cols);
  const W = cols * 64, H = rows * 64;
  const rgb = new Uint8Array(W * H * 3);
  samples.forEach((s, k) => {
    const ox = (k % cols) * 64, oy = Math.floor(k / cols) * 64;
    for (let y = 0; y < 64; y++) {
      rgb.set(s.image!.rgb.subarray(y * 64 * 3, (y + 1) * 64 * 3), ((oy + y) * W + ox) * 3);
    }
  });
  await Deno.writeFile(path, encodePng({ width: W, height: H, rgb }));
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      model: { type: "string" },
      count: { type: "string" },
      seed: { type: "string" },
      steps: { type: "string" },
      guidance: { type: "string" },
      "guidance-rescale": { type: "string" },
      sheet: { type: "string" },
      recon: { type: "boolean" },
      json: { type: "boolean" },
    },
  });
  let flags;
  try {
    const int = (name: string, v: string | undefined, fallback: number, min = 1) =>
      numberFlag(name, v, { integer: true, min }) ?? fallback;
    flags = {
      count: int("count", values.count, 200),
      seed: int("seed", values.seed, 1, 0),
      steps: int("steps", values.steps, 20),
      guidanceScale: numberFlag("guidance", values.guidance, { min: 0 }) ?? 3,
      guidanceRescale: numberFlag("guidance-rescale", values["guidance-rescale"], { min: 0, max: 1 }) ?? 0,
    };
  } catch (e) {
    if (!(e instanceof FlagError)) throw e;
    console.error(`error: ${e.message}`);
    Deno.exit(2);
  }
  const runner = new EngineRunner();
  const progress = new Progress("eval", progressMode(values.json));
  const onProgress = (step: number, total: number) => progress.update({ step, total });
  try {
    const pipe = await StableDiffusionPipeline.load(values.model ?? "models/tiny-shapes", runner);
    if (values.recon) {
      const r = await evaluateReconstruction(pipe, {
        count: flags.count,
        seed: flags.seed,
        onProgress,
      });
      if (progress.result({ kind: "reconstruction", count: r.count, rates: r.rates })) Deno.exit(0);
      console.log(`VAE reconstructions of ${r.count} held-out renders (encode + decode, no diffusion):`);
      console.log(`background colour right: ${(100 * r.rates.background).toFixed(1)}%`);
      console.log(`object colour right:     ${(100 * r.rates.colour).toFixed(1)}%`);
      console.log(`shape right:             ${(100 * r.rates.shape).toFixed(1)}%`);
      Deno.exit(0);
    }
    const t0 = performance.now();
    const r = await evaluatePromptFollowing(pipe, {
      ...flags,
      keepImages: !!values.sheet,
      onProgress,
    });
    if (values.sheet) await writeSheet(values.sheet, r.samples);
    const seconds = (performance.now() - t0) / 1000;
    if (
      progress.result({
        kind: "prompt_following",
        count: r.samples.length,
        rates: r.rates,
        seconds,
        sheet: values.sheet,
      })
    ) {
      Deno.exit(0);
    }
    const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
    console.log(`held-out prompts: ${r.samples.length}, ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    console.log(`background colour right: ${pct(r.rates.background)}`);
    console.log(`object colour right:     ${pct(r.rates.colour)}`);
    console.log(`shape right:             ${pct(r.rates.shape)}`);
    // [right, total] per key, in first-seen order.
    const tally = (key: (s: Sample) => string | null, right: (s: Sample) => boolean) => {
      const m = new Map<string, [number, number]>();
      for (const s of r.samples) {
        const k = key(s);
        if (k === null) continue;
        const [ok, n] = m.get(k) ?? [0, 0];
        m.set(k, [ok + (right(s) ? 1 : 0), n + 1]);
      }
      return [...m].map(([k, [ok, n]]) => `${k} ${ok}/${n}`).join(", ");
    };
    const heldPair = (s: Sample) => {
      const o = s.scene.objects[0];
      return isHeldOutShapeColour(o.shape, o.colour) ? `${o.colour} ${o.shape}` : null;
    };
    console.log(`shape right, per shape: ${tally((s) => s.scene.objects[0].shape, (s) => s.shape)}`);
    console.log(
      `object colour right, per held-out kind: ${
        tally((s) => heldPair(s) ? "(shape, colour) pair" : "(colour, background) pair", (s) => s.colour)
      }`,
    );
    console.log(
      `object colour right, per held-out (shape, colour) pair: ${tally(heldPair, (s) => s.colour)}`,
    );
    if (values.sheet) console.log(`contact sheet: ${values.sheet}`);
  } finally {
    runner.terminate();
  }
}
