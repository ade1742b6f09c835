/**
 * The edge's Hono application: auth (API keys, tenant-scoped objects), per-key rate limits, problem+json
 * errors in one place, and the routes of API.md — files, trainings, merges, adapters, predictions (with
 * `Prefer: wait` and SSE streams), account and usage, the webhook secret — plus the worker protocol under
 * `/internal/workers/*`, the generated `/openapi.json` and `/docs`.
 *
 * @example
 * ```ts
 * const app = createApp({ modelsDir: "./models" }); // in-memory stores
 * Deno.serve({ port: 8787 }, app.fetch);
 * ```
 */
import { Hono } from "hono";
import { z } from "zod";
import { ModelInfo } from "../shared/account.ts";
import { BrokerBusyError } from "../shared/job_broker.ts";
import { authenticate, hashApiKey } from "./auth/api_keys.ts";
import { createEdge, type Edge, type EdgeConfig, type EdgeEnv } from "./context.ts";
import { availableModels } from "./models.ts";
import { OpenApi, route } from "./openapi.ts";
import { ApiProblem, problemResponse } from "./problem.ts";
import { accountRoutes } from "./routes/account.ts";
import { adapterRoutes } from "./routes/adapters.ts";
import { playgroundRoutes } from "./routes/playground.ts";
import { openAiImageRoutes } from "./routes/openai_images.ts";
import { OPENAI_PATHS, openAiErrorResponse } from "./openai_errors.ts";
import { docsRoutes } from "./routes/docs.ts";
import { fileRoutes } from "./routes/files.ts";
import { integrationLinkRoutes, integrationRoutes } from "./routes/integrations.ts";
import { predictionRoutes } from "./routes/predictions.ts";
import { trainingRoutes } from "./routes/trainings.ts";
import { workerRoutes } from "./routes/workers.ts";

export type { EdgeConfig } from "./context.ts";
export { listModels, type ModelInfo } from "./models.ts";

export interface EdgeApp {
  app: Hono<EdgeEnv>;
  edge: Edge;
  api: OpenApi;
}

/** The app with its services (tests and `embedded.ts` reach the broker and stores through `edge`). */
export function createEdgeApp(config: EdgeConfig | Edge): EdgeApp {
  const edge = "events" in config ? config : createEdge(config);
  const app = new Hono<EdgeEnv>();
  const api = new OpenApi();

  app.use("*", async (c, next) => {
    c.set("edge", edge);
    await next();
  });
  // Problem+json everywhere, except OpenAI's error shape under its routes (`openai_errors.ts`).
  const answer = (p: ApiProblem, path: string) =>
    OPENAI_PATHS.test(path) ? openAiErrorResponse(p) : problemResponse(p, path);
  app.onError((err, c) => {
    if (err instanceof ApiProblem) return answer(err, c.req.path);
    if (err instanceof BrokerBusyError) return answer(busy(err), c.req.path);
    console.error(`${c.req.method} ${c.req.path}:`, err);
    return answer(
      new ApiProblem(500, "about:blank", "Internal Server Error", "the server failed; it was logged"),
      c.req.path,
    );
  });
  app.notFound((c) =>
    OPENAI_PATHS.test(c.req.path)
      ? answer(
        new ApiProblem(404, "about:blank", "Not Found", `no route for ${c.req.method} ${c.req.path}`),
        c.req.path,
      )
      : problemResponse(
        new ApiProblem(404, "about:blank", "Not Found", `no route for ${c.req.method} ${c.req.path}`),
      )
  );

  route(app, api, {
    method: "get",
    path: "/healthz",
    summary: "Liveness",
    tags: ["meta"],
    auth: "none",
    responses: { 200: { description: "Alive", schema: z.object({ status: z.literal("ok") }) } },
  }, (c) => c.json({ status: "ok" }));
  // Registered before the auth middleware: the model list is public.
  route(app, api, {
    method: "get",
    path: "/v1/models",
    summary: "Base models the worker pool can serve (no auth)",
    tags: ["models"],
    auth: "none",
    responses: { 200: { description: "Models", schema: z.object({ data: z.array(ModelInfo) }) } },
  }, async (c) => c.json({ data: await availableModels(edge) }));
  docsRoutes(app, api);
  playgroundRoutes(app, api);
  workerRoutes(app, api);
  // Discord and Slack sign their requests instead of sending a key.
  integrationRoutes(app, api);

  app.use("/v1/*", async (c, next) => {
    const key = /^Bearer\s+(\S+)$/i.exec(c.req.header("authorization") ?? "")?.[1];
    const tenant = key ? await authenticate(edge.metadata, key) : null;
    if (!tenant) {
      throw new ApiProblem(
        401,
        "unauthorized",
        "Unauthorized",
        key ? "the API key is not valid" : "send Authorization: Bearer <API key>",
        {
          headers: { "WWW-Authenticate": 'Bearer realm="api"' },
        },
      );
    }
    c.set("tenant", tenant);
    c.set("keyHash", await hashApiKey(key!));
    await next();
  });
  app.use("/v1/*", async (c, next) => {
    const d = edge.limiter.take(c.get("keyHash"));
    if (!d.allowed) {
      throw new ApiProblem(
        429,
        "rate-limited",
        "Too Many Requests",
        `this key may make ${edge.limiter.policy.limit} requests per ${
          edge.limiter.policy.windowMs / 1000
        } s; retry in ${d.resetS} s`,
        {
          headers: d.headers,
        },
      );
    }
    await next();
    for (const [k, v] of Object.entries(d.headers)) c.res.headers.set(k, v);
  });

  fileRoutes(app, api);
  trainingRoutes(app, api);
  adapterRoutes(app, api);
  predictionRoutes(app, api);
  openAiImageRoutes(app, api);
  accountRoutes(app, api);
  integrationLinkRoutes(app, api);
  return { app, edge, api };
}

/** A store write that kept losing to concurrent writers: nothing was done or charged; try again shortly. */
function busy(err: BrokerBusyError): ApiProblem {
  console.warn(`busy (answered 503): ${err.message}`);
  return new ApiProblem(
    503,
    "busy",
    "Service Busy",
    `too many concurrent changes to the same account or job; nothing was done or charged, retry in ${err.retryAfterS} s`,
    { headers: { "Retry-After": String(err.retryAfterS) } },
  );
}

export function createApp(config: EdgeConfig | Edge): Hono<EdgeEnv> {
  return createEdgeApp(config).app;
}
