/**
 * Merge jobs (`POST /v1/merges`): `custom_diffusion` merges separately trained Custom Diffusion concepts into
 * one adapter by the constrained least squares of the paper (`methods/custom_diffusion_compose.ts`): each
 * concept's prompt features map as its own weights map them (`mode: "exact"`: the target words, exactly;
 * default `sequence`: every position of its prompts, as a strong penalty), everything else stays as
 * close to the base model as the constraints allow. The output keeps every concept's modifier token.
 *
 * @example
 * ```ts
 * const { outputs, metrics } = await merge(ctx); // ctx.job.kind === "merge", method "custom_diffusion"
 * ```
 */
import { z } from "zod";
import { BlobRef } from "../../shared/worker_protocol.ts";
import { encodeCustomDiffusion } from "../adapters/custom_diffusion.ts";
import { mergeCustomDiffusion } from "../methods/custom_diffusion_compose.ts";
import { type JobContext, type JobResult, resolveBlob } from "./job.ts";
import { CUSTOM_DIFFUSION_OUTPUT_NAME } from "./training.ts";

const MergeInput = z.object({
  method: z.string(),
  destination: z.string().optional(),
  mode: z.enum(["sequence", "exact"]).optional(),
  adapters: z.array(z.object({
    id: z.string(),
    name: z.string().optional(),
    weight: z.number().default(1),
    blob: BlobRef.optional(),
  })).min(2),
});

/** Merge methods this worker runs. */
export const SERVED_MERGE_METHODS = ["custom_diffusion"] as const;

export async function merge(ctx: JobContext): Promise<JobResult> {
  const { job, lease, edge, engine } = ctx;
  const input = MergeInput.parse(job.input);
  const method = job.method ?? input.method;
  if (!(SERVED_MERGE_METHODS as readonly string[]).includes(method)) {
    throw new RangeError(
      `merge method "${method}" is not served by this worker (served: ${SERVED_MERGE_METHODS.join(", ")})`,
    );
  }
  const started = performance.now();
  const pipe = await engine.pipeline(job.baseModel);
  const adapters = [];
  for (const [i, a] of input.adapters.entries()) {
    if (a.weight !== 1) {
      throw new RangeError(
        `adapters[${i}].weight ${a.weight}: the closed-form merge has no weights (each concept is kept exactly)`,
      );
    }
    const ref = a.blob ?? resolveBlob(job, a.id, `adapters[${i}]`, "adapter");
    const decoded = await engine.adapter(ref, (r) => edge.getBlob(r));
    if (decoded.kind !== "custom_diffusion") {
      const what = decoded.kind === "full" ? "a full fine-tune (a whole model)" : "a LoRA";
      throw new RangeError(`adapters[${i}] ("${a.name ?? a.id}") is ${what}, not a Custom Diffusion adapter`);
    }
    adapters.push({ ...decoded.adapter, name: a.name ?? decoded.adapter.name });
  }
  const m = await mergeCustomDiffusion(pipe, adapters, { name: input.destination, mode: input.mode });
  lease.log(
    `merged ${m.stats.concepts} concepts (${m.adapter.tokens.map((t) => t.token).join(", ")}) over ` +
      `${m.stats.layers} layers: ${m.stats.targetRows} target rows, ${m.stats.regularizationRows} ` +
      `regularization rows, ${Math.round(m.stats.ms)} ms`,
  );
  const blob = await edge.putBlob(encodeCustomDiffusion(m.adapter), "application/vnd.safetensors");
  return {
    outputs: [{ blob, contentType: "application/vnd.safetensors", name: CUSTOM_DIFFUSION_OUTPUT_NAME }],
    metrics: {
      concepts: m.stats.concepts,
      layers: m.stats.layers,
      target_rows: m.stats.targetRows,
      regularization_rows: m.stats.regularizationRows,
      merge_time: Math.round((performance.now() - started) / 10) / 100,
    },
  };
}
