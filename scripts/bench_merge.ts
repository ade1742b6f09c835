/**
 * Speed of Custom Diffusion's closed-form merge (`gpu-worker/methods/custom_diffusion_merge.ts`) on SD 1.5-sized
 * inputs, all random (seeded): the 16 cross-attention layers' to_k and to_v ([out, 768], out = 320 ... 1280 in
 * UNet order), two concepts with 2 target prompts x 4 target tokens each (m = 16 target rows), and
 * regularization features of 200 captions x 77 tokens (15400 x 768). Not a test: timings depend on the machine.
 *
 * Usage: deno run -A scripts/bench_merge.ts [--runs 1] [--seed 0]
 *
 * @example
 * ```ts
 * const r = benchMerge({ runs: 1 }); // { totalMs, gramMs, perLayerMs, peakRssMb, ... }
 * console.log(formatMergeBench(r));
 * ```
 */
import { parseArgs } from "node:util";
import {
  type BaseLayer,
  closedFormMerge,
  factorRegularization,
  type MergeConcept,
  softConstrainedMerge,
} from "../gpu-worker/methods/custom_diffusion_merge.ts";
import { Rng } from "../gpu-worker/random.ts";

/** SD 1.5's attn2 inner dims in UNet order: down 0-2 (two each), mid, up 1-3 (three each). */
const SD15_CROSS_ATTENTION: [string, number][] = [
  ...[0, 1, 2].flatMap((b) =>
    [0, 1].map((a): [string, number] => [`down_blocks.${b}.attentions.${a}`, 320 << b])
  ),
  ["mid_block.attentions.0", 1280],
  ...[1, 2, 3].flatMap((b) =>
    [0, 1, 2].map((a): [string, number] => [`up_blocks.${b}.attentions.${a}`, 1280 >> (b - 1)])
  ),
];

export interface MergeBenchOptions {
  /** Timed merges (the figures are the fastest run's). Default 1. */
  runs?: number;
  seed?: number;
  featureDim?: number;
  /** Regularization captions x tokens per caption. Defaults 200 x 77. */
  captions?: number;
  tokensPerCaption?: number;
  concepts?: number;
  /** Target rows per concept (prompts x target tokens). Default 2 x 4 = 8 (exact), 2 x 77 (sequence). */
  targetRowsPerConcept?: number;
  /** `exact` (closedFormMerge, the paper) or `sequence` (softConstrainedMerge, the service's default). */
  mode?: "exact" | "sequence";
}

export interface MergeBenchResult {
  mode: "exact" | "sequence";
  /** Layers merged (to_k and to_v of each of the 16 cross-attentions: 32). */
  layers: number;
  targetRows: number;
  regularizationRows: number;
  featureDim: number;
  /** Whole closedFormMerge call. */
  totalMs: number;
  /** C = KᵀK alone. */
  gramMs: number;
  /** Cholesky of C, D = K_t C⁻¹, factor of D K_tᵀ, (D K_tᵀ)⁻¹ D. */
  factorMs: number;
  /** Per merged layer (mean over the layers). */
  perLayerMs: number;
  conditionC: number;
  conditionTargets: number;
  /** Generating the random inputs (not part of the merge). */
  setupMs: number;
  /** Peak resident memory of the process (VmHWM), or the largest RSS seen where /proc is unavailable. */
  peakRssMb: number;
  /** Resident memory just before the first merge (the inputs: ~3 x 77 MB of weights, 47 MB of features). */
  rssBeforeMergeMb: number;
  /** 1-minute load average at the end (machine contention). */
  loadAverage: number;
}

/** Times closedFormMerge on SD 1.5-sized random inputs; see the module comment. */
export function benchMerge(options: MergeBenchOptions = {}): MergeBenchResult {
  const d = options.featureDim ?? 768;
  const regRows = (options.captions ?? 200) * (options.tokensPerCaption ?? 77);
  const mode = options.mode ?? "exact";
  const nConcepts = options.concepts ?? 2;
  const tRows = options.targetRowsPerConcept ?? (mode === "exact" ? 8 : 2 * (options.tokensPerCaption ?? 77));
  const rng = new Rng(options.seed ?? 0);
  let maxRss = Deno.memoryUsage().rss;
  const t0 = performance.now();
  const base = new Map<string, BaseLayer>();
  for (const [prefix, out] of SD15_CROSS_ATTENTION) {
    for (const proj of ["to_k", "to_v"]) {
      base.set(`${prefix}.transformer_blocks.0.attn2.${proj}`, {
        data: rng.normal(out * d, 0.02),
        out,
        inFeatures: d,
      });
    }
  }
  const concepts: MergeConcept[] = Array.from({ length: nConcepts }, (_, n) => ({
    name: `concept${n}`,
    targetRows: tRows,
    targetFeatures: rng.normal(tRows * d),
    weights: new Map([...base].map(([name, b]) => {
      const delta = rng.normal(b.data.length, 0.002);
      return [name, b.data.map((x, i) => x + delta[i])];
    })),
  }));
  const regularizationFeatures = rng.normal(regRows * d);
  const setupMs = performance.now() - t0;
  const rssBefore = Deno.memoryUsage().rss;
  maxRss = Math.max(maxRss, rssBefore);
  let best: ReturnType<typeof closedFormMerge>["stats"] | undefined;
  for (let run = 0; run < Math.max(1, options.runs ?? 1); run++) {
    let stats: ReturnType<typeof closedFormMerge>["stats"];
    if (mode === "exact") {
      stats = closedFormMerge({
        base,
        concepts,
        regularizationFeatures,
        regularizationRows: regRows,
        featureDim: d,
      })
        .stats;
    } else {
      const tg = performance.now();
      const regularization = factorRegularization(regularizationFeatures, regRows, d);
      const gramMs = performance.now() - tg;
      stats = softConstrainedMerge({ base, concepts, regularization, featureDim: d }).stats;
      stats = { ...stats, ms: stats.ms + gramMs, gramMs };
    }
    maxRss = Math.max(maxRss, Deno.memoryUsage().rss);
    if (!best || stats.ms < best.ms) best = stats;
  }
  return {
    mode,
    layers: best!.layers,
    targetRows: best!.targetRows,
    regularizationRows: best!.regularizationRows,
    featureDim: d,
    totalMs: best!.ms,
    gramMs: best!.gramMs,
    factorMs: best!.factorMs,
    perLayerMs: best!.layerMs / best!.layers,
    conditionC: best!.conditionC,
    conditionTargets: best!.conditionTargets,
    setupMs,
    peakRssMb: Math.max(peakRss() ?? 0, maxRss) / 2 ** 20,
    rssBeforeMergeMb: rssBefore / 2 ** 20,
    loadAverage: Deno.loadavg()[0],
  };
}

/** VmHWM from /proc/self/status in bytes, or undefined off Linux. */
function peakRss(): number | undefined {
  try {
    const m = Deno.readTextFileSync("/proc/self/status").match(/^VmHWM:\s+(\d+)\s+kB/m);
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** The figures as a few lines of text. */
export function formatMergeBench(r: MergeBenchResult): string {
  return [
    `closed-form merge (${r.mode}), ${r.layers} layers, m = ${r.targetRows} target rows, K ${r.regularizationRows}x${r.featureDim}`,
    `  total            ${r.totalMs.toFixed(0)} ms`,
    `  C = KᵀK          ${r.gramMs.toFixed(0)} ms`,
    `  factorizations   ${r.factorMs.toFixed(1)} ms`,
    `  per layer        ${r.perLayerMs.toFixed(2)} ms`,
    `  cond(C) ~ ${r.conditionC.toExponential(2)}, cond(${r.mode === "exact" ? "D K_tᵀ" : "C + μT"}) ~ ${
      r.conditionTargets.toExponential(2)
    }`,
    `  peak RSS         ${r.peakRssMb.toFixed(0)} MiB (${
      r.rssBeforeMergeMb.toFixed(0)
    } MiB before merging, with ` +
    `the inputs; generating them took ${r.setupMs.toFixed(0)} ms, not timed)`,
    `  load average     ${r.loadAverage.toFixed(2)}`,
  ].join("\n");
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { runs: { type: "string" }, seed: { type: "string" }, mode: { type: "string" } },
  });
  const modes = values.mode ? [values.mode as "exact" | "sequence"] : ["exact", "sequence"] as const;
  for (const mode of modes) {
    console.log(
      formatMergeBench(benchMerge({ runs: Number(values.runs ?? 1), seed: Number(values.seed ?? 0), mode })),
    );
  }
}
