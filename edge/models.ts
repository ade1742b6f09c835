/**
 * Base models: the diffusers folders of MODELS_DIR, plus any model a registered worker serves. A job names
 * one; the broker only leases it to a worker registered for it. A model's `capabilities` are what the workers
 * registered for it serve (`txt2img`, prediction features such as `img2img` and `regions`, `training:<method>`,
 * `merge:<method>`); before any registers, the folder's defaults (txt2img, img2img).
 *
 * @example
 * ```ts
 * await listModels("./models"); // [{ id: "tiny-shapes", family: "StableDiffusionPipeline", resolution: 64, ... }]
 * ```
 */
import type { ModelInfo } from "../shared/account.ts";
import type { Edge, WorkerRecord } from "./context.ts";
import { ApiProblem } from "./problem.ts";

export type { ModelInfo };

/** Base models: the folders of `modelsDir` that hold a diffusers `model_index.json`. */
export async function listModels(modelsDir: string): Promise<ModelInfo[]> {
  const out: ModelInfo[] = [];
  let entries: Deno.DirEntry[] = [];
  try {
    entries = await Array.fromAsync(Deno.readDir(modelsDir));
  } catch {
    return out;
  }
  for (const e of entries.filter((e) => e.isDirectory).sort((a, b) => a.name.localeCompare(b.name))) {
    try {
      const index = JSON.parse(await Deno.readTextFile(`${modelsDir}/${e.name}/model_index.json`));
      const unet = JSON.parse(await Deno.readTextFile(`${modelsDir}/${e.name}/unet/config.json`));
      const vae = JSON.parse(await Deno.readTextFile(`${modelsDir}/${e.name}/vae/config.json`));
      const factor = 2 ** ((vae.block_out_channels?.length ?? 4) - 1);
      out.push({
        id: e.name,
        family: index._class_name ?? "StableDiffusionPipeline",
        resolution: (unet.sample_size ?? 64) * factor,
        capabilities: ["txt2img", "img2img"],
      });
    } catch {
      // Not a model folder; skip it.
    }
  }
  return out;
}

/** Models on disk and those registered workers serve. */
export async function availableModels(edge: Edge): Promise<ModelInfo[]> {
  const models = await listModels(edge.modelsDir);
  const workers = await edge.metadata.list<WorkerRecord>(["workers"], { limit: 1000 });
  for (const w of workers.items) {
    for (const id of w.value.models) {
      if (!models.some((m) => m.id === id)) {
        models.push({
          id,
          family: "StableDiffusionPipeline",
          resolution: 512,
          capabilities: ["txt2img", "img2img"],
        });
      }
    }
  }
  // What the workers registered for a model serve, when any is: its jobs are refused otherwise (capabilities.ts).
  for (const m of models) {
    const serving = workers.items.map((w) => w.value).filter((w) => w.models.includes(m.id));
    if (!serving.length) continue;
    m.capabilities = [
      ...new Set([
        ...(serving.some((w) => w.kinds.includes("prediction")) ? ["txt2img"] : []),
        ...serving.flatMap((w) => w.kinds.includes("prediction") ? w.features ?? [] : []),
        ...serving.flatMap((w) =>
          w.kinds.includes("training") ? (w.methods ?? []).map((x) => `training:${x}`) : []
        ),
        ...serving.flatMap((w) => w.kinds.includes("merge") ? (w.merges ?? []).map((x) => `merge:${x}`) : []),
      ]),
    ];
  }
  return models;
}

export async function requireModel(edge: Edge, id: string): Promise<void> {
  const models = await availableModels(edge);
  if (!models.some((m) => m.id === id)) {
    const known = models.map((m) => m.id).join(", ") || "none";
    throw new ApiProblem(
      422,
      "unknown-base-model",
      "Unknown base model",
      `no base model "${id}" (available: ${known})`,
      {
        invalid_fields: [{ name: "base_model", reason: `not one of: ${known}` }],
      },
    );
  }
}
