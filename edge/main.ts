/**
 * Entry point of `deno task start`: serves the edge on PORT (default 8787) with models from MODELS_DIR
 * (default ./models).
 */
import { createApp } from "./app.ts";

const port = Number(Deno.env.get("PORT") ?? 8787);
const modelsDir = Deno.env.get("MODELS_DIR") ?? "./models";
const app = createApp({ modelsDir });
Deno.serve({
  port,
  onListen: ({ port }) => console.log(`listening on http://localhost:${port} (models: ${modelsDir})`),
}, app.fetch);
