/**
 * The OpenAPI 3.1 document, generated: each route is declared once with `route(...)`, which registers the
 * Hono handler and records its request and response zod schemas; `document()` converts them with zod 4's
 * `z.toJSONSchema`. A test checks that every route the app serves is in the document.
 *
 * @example
 * ```ts
 * const api = new OpenApi();
 * route(app, api, { method: "get", path: "/healthz", summary: "Liveness", auth: "none",
 *   responses: { 200: { description: "ok", schema: z.object({ status: z.string() }) } } }, (c) => c.json({ status: "ok" }));
 * ```
 */
import type { Handler, Hono, MiddlewareHandler } from "hono";
import { z } from "zod";
import { Problem } from "../shared/problem.ts";
import type { EdgeEnv } from "./context.ts";

export interface ResponseDoc {
  description: string;
  schema?: z.ZodType;
  /** Defaults to application/json when a schema is given. */
  contentType?: string;
}

export interface RouteDoc {
  method: "get" | "post" | "put" | "delete";
  /** Hono's syntax: `/v1/files/:id`. */
  path: string;
  summary: string;
  description?: string;
  tags?: string[];
  auth: "api_key" | "worker_token" | "none";
  body?: { schema: z.ZodType; contentType?: string };
  query?: Record<string, { description: string }>;
  headers?: Record<string, { description: string }>;
  responses: Record<number, ResponseDoc>;
}

const toOpenApiPath = (p: string) => p.replace(/:([A-Za-z0-9_]+)/g, "{$1}");
const json = (s: z.ZodType, io: "input" | "output") => z.toJSONSchema(s, { io, unrepresentable: "any" });

export class OpenApi {
  readonly routes: RouteDoc[] = [];

  add(doc: RouteDoc): void {
    this.routes.push(doc);
  }

  document(): Record<string, unknown> {
    const paths: Record<string, Record<string, unknown>> = {};
    for (const r of this.routes) {
      const params = [...r.path.matchAll(/:([A-Za-z0-9_]+)/g)].map((m) => ({
        name: m[1],
        in: "path",
        required: true,
        schema: { type: "string" },
      }));
      const query = Object.entries(r.query ?? {}).map(([name, q]) => ({
        name,
        in: "query",
        required: false,
        description: q.description,
        schema: { type: "string" },
      }));
      const headers = Object.entries(r.headers ?? {}).map(([name, h]) => ({
        name,
        in: "header",
        required: false,
        description: h.description,
        schema: { type: "string" },
      }));
      const responses: Record<string, unknown> = {};
      for (const [status, res] of Object.entries(r.responses)) {
        responses[status] = {
          description: res.description,
          ...(res.schema
            ? { content: { [res.contentType ?? "application/json"]: { schema: json(res.schema, "output") } } }
            : {}),
          ...(!res.schema && res.contentType ? { content: { [res.contentType]: {} } } : {}),
        };
      }
      responses.default = {
        description: "An RFC 9457 problem (4xx/5xx)",
        content: { "application/problem+json": { schema: { $ref: "#/components/schemas/Problem" } } },
      };
      (paths[toOpenApiPath(r.path)] ??= {})[r.method] = {
        summary: r.summary,
        ...(r.description ? { description: r.description } : {}),
        tags: r.tags ?? [],
        security: r.auth === "none" ? [] : [{ [r.auth === "api_key" ? "apiKey" : "workerToken"]: [] }],
        parameters: [...params, ...query, ...headers],
        ...(r.body
          ? {
            requestBody: {
              required: true,
              content: {
                [r.body.contentType ?? "application/json"]: { schema: json(r.body.schema, "input") },
              },
            },
          }
          : {}),
        responses,
      };
    }
    return {
      openapi: "3.1.0",
      info: {
        title: "personalize",
        version: "1",
        description:
          "Personalize text-to-image diffusion models: upload photos, train adapters (DreamBooth, Custom Diffusion, Concept Sliders, CIDM), generate images. Errors are RFC 9457 problems.",
      },
      paths,
      components: {
        schemas: { Problem: json(Problem, "output") },
        securitySchemes: {
          apiKey: { type: "http", scheme: "bearer", description: "An API key pfd_<random>_<crc32>" },
          workerToken: { type: "http", scheme: "bearer", description: "The worker token (WORKER_TOKEN)" },
        },
      },
    };
  }
}

/** Registers a handler and its documentation together. */
export function route(
  app: Hono<EdgeEnv>,
  api: OpenApi,
  doc: RouteDoc,
  ...handlers: (Handler<EdgeEnv> | MiddlewareHandler<EdgeEnv>)[]
): void {
  api.add(doc);
  app.on(doc.method.toUpperCase(), doc.path, ...(handlers as [Handler<EdgeEnv>]));
}
