/**
 * SeeCoder's figures for `deno task bench`: the encoder's time per reference image (one image per run, as the
 * prediction job encodes it once per request) next to the UNet's step time with its embeddings as the context
 * (batch 2 = one CFG step, zeros unconditional), on the model folder's `seecoder/`. Null when it has none.
 */
import type { StableDiffusionPipeline } from "../gpu-worker/pipelines/stable_diffusion.ts";
import { hasSeeCoder } from "../gpu-worker/seecoder/folder.ts";
import { renderScene } from "../gpu-worker/shapesworld/render.ts";
import { sampleScene } from "../gpu-worker/shapesworld/world.ts";
import { Rng } from "../gpu-worker/random.ts";

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

export async function benchSeeCoder(pipe: StableDiffusionPipeline, runs: number) {
  if (!(await hasSeeCoder(pipe.folder.dir))) return null;
  const enc = await pipe.referenceEncoder();
  const ref = renderScene(sampleScene(new Rng(3), { objectCount: 1 }), 64);
  await enc.encode([ref]); // warm-up
  const encodeMs: number[] = [];
  for (let i = 0; i < Math.max(runs, 10); i++) {
    const t0 = performance.now();
    await enc.encode([ref]);
    encodeMs.push(performance.now() - t0);
  }
  const stepMs: number[] = [];
  for (let i = 0; i < runs; i++) {
    let last = 0;
    await pipe.generate({
      referenceImage: ref,
      seed: i,
      steps: 20,
      onStep: () => {
        const now = performance.now();
        if (last) stepMs.push(now - last);
        last = now;
      },
    });
  }
  return { encodeMs: median(encodeMs), stepMs: median(stepMs), tokens: enc.tokens, hidden: enc.hidden };
}

export function formatSeeCoderBench(r: NonNullable<Awaited<ReturnType<typeof benchSeeCoder>>>): string {
  return `SeeCoder encode ms/image (64x64 reference -> ${r.tokens} x ${r.hidden}): ${
    r.encodeMs.toFixed(2)
  }; ` +
    `UNet step ms with it (batch 2, one CFG step, median): ${r.stepMs.toFixed(2)}`;
}
