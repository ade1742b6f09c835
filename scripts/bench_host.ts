/**
 * Host-side speed figures (plain TypeScript, no ONNX Runtime): loading the real CLIP tokenizer (vocab.json +
 * merges.txt from `../shared/reference/clip-tokenizer/`), encoding its 14 reference texts on a fresh tokenizer
 * (cold) and again (its cache warm), and rendering 1000 random ShapesWorld scenes at 64x64. These were
 * wall-clock limits inside tests (load < 1 s, the 14 encodes < 100 ms, 1000 renders < 3 s), which a loaded
 * machine broke; here they are measured and printed next to those figures as budgets, never asserted.
 *
 * Part of `deno task bench` (`--skip-host` leaves it out); alone: `deno run -A scripts/bench_host.ts [--runs 5]`.
 */
import { parseArgs } from "node:util";
import { ClipTokenizer } from "../gpu-worker/tokenizer/clip_tokenizer.ts";
import { renderScene } from "../gpu-worker/shapesworld/render.ts";
import { sampleScene } from "../gpu-worker/shapesworld/world.ts";
import { Rng } from "../gpu-worker/random.ts";

const TOKENIZER_REF = new URL("../../shared/reference/clip-tokenizer/", import.meta.url);

export interface HostBench {
  /** Median ms to build the tokenizer from the vocab.json and merges.txt text (JSON.parse included). */
  tokenizerLoadMs: number;
  vocabSize: number;
  /** Median ms to encode the 14 reference texts on a fresh tokenizer, and again on the same one. */
  encodeColdMs: number;
  encodeWarmMs: number;
  texts: number;
  /** Median ms to render `scenes` 64x64 scenes. */
  renderMs: number;
  scenes: number;
}

/** The figures the tests used to assert, as budgets (ms). */
export const HOST_BUDGETS = { tokenizerLoadMs: 1000, encodeColdMs: 100, renderMs: 3000 } as const;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function timed(fn: () => void): number {
  const t0 = performance.now();
  fn();
  return performance.now() - t0;
}

export async function benchHost(runs = 5): Promise<HostBench> {
  const vocabText = await Deno.readTextFile(new URL("vocab.json", TOKENIZER_REF));
  const mergesText = await Deno.readTextFile(new URL("merges.txt", TOKENIZER_REF));
  const texts: string[] = JSON.parse(await Deno.readTextFile(new URL("tokenized.json", TOKENIZER_REF))).cases
    .map((c: { text: string }) => c.text);
  const load: number[] = [], cold: number[] = [], warm: number[] = [], render: number[] = [];
  let tok!: ClipTokenizer;
  for (let r = 0; r < runs; r++) {
    load.push(timed(() => (tok = ClipTokenizer.fromVocabAndMerges(JSON.parse(vocabText), mergesText))));
    cold.push(timed(() => texts.forEach((t) => tok.encode(t))));
    warm.push(timed(() => texts.forEach((t) => tok.encode(t))));
  }
  const rng = new Rng(1);
  const scenes = Array.from({ length: 1000 }, () => sampleScene(rng));
  for (let r = 0; r < runs; r++) render.push(timed(() => scenes.forEach((s) => renderScene(s))));
  return {
    tokenizerLoadMs: median(load),
    vocabSize: tok.vocabSize,
    encodeColdMs: median(cold),
    encodeWarmMs: median(warm),
    texts: texts.length,
    renderMs: median(render),
    scenes: scenes.length,
  };
}

export function formatHostBench(b: HostBench): string {
  const vs = (ms: number, budget: number) =>
    `${ms.toFixed(1)} ms (budget ${budget} ms${ms > budget ? ": OVER" : ""})`;
  return [
    `CLIP tokenizer load (${b.vocabSize} tokens): ${vs(b.tokenizerLoadMs, HOST_BUDGETS.tokenizerLoadMs)}`,
    `CLIP tokenizer, ${b.texts} reference texts: cold ${vs(b.encodeColdMs, HOST_BUDGETS.encodeColdMs)}, ` +
    `cached ${b.encodeWarmMs.toFixed(2)} ms`,
    `ShapesWorld render, ${b.scenes} scenes at 64x64: ${vs(b.renderMs, HOST_BUDGETS.renderMs)} ` +
    `(${(b.renderMs / b.scenes).toFixed(3)} ms/scene)`,
  ].join("\n");
}

if (import.meta.main) {
  const { values } = parseArgs({ args: Deno.args, options: { runs: { type: "string" } } });
  console.log(formatHostBench(await benchHost(Number(values.runs ?? 5))));
}
