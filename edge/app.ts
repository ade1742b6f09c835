/**
 * The edge's Hono application. For now: liveness and the list of base models on disk; the full public API
 * (files, trainings, adapters, predictions, billing, webhooks) is the service issue's work and mounts here.
 *
 * @example
 * ```ts
 * const app = createApp({ modelsDir: "./models" });
 * Deno.serve({ port: 8787 }, app.fetch);
 * ```
 */
import { Hono } from "hono";

export interface EdgeConfig {
  modelsDir: string;
}

export interface ModelInfo {
  id: string;
  family: string;
  resolution: number;
  capabilities: string[];
}

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

export function createApp(config: EdgeConfig) {
  const app = new Hono();
  app.get("/healthz", (c) => c.json({ status: "ok" }));
  app.get("/v1/models", async (c) => c.json({ data: await listModels(config.modelsDir) }));
  app.notFound((c) =>
    c.json(
      {
        type: "about:blank",
        title: "Not Found",
        status: 404,
        detail: `no route for ${c.req.method} ${c.req.path}`,
      },
      404,
      {
        "content-type": "application/problem+json",
      },
    )
  );
  return app;
}
