/**
 * `Idempotency-Key` on POSTs that cost money or create a job: the first successful response is stored for
 * 24 hours and replayed (`Idempotent-Replayed: true`) for the same key; the same key with different
 * parameters is 422, and while the first request is still running 409. Failed attempts (4xx/5xx) are not
 * stored, so a client can fix its request (or top up credits) and retry with the same key. Job ids are
 * derived from the key too (`jobId`), so even a crash between accepting and storing the response cannot
 * make a retry create, or charge, a second job.
 *
 * @example
 * ```ts
 * route(app, api, doc, idempotency(), handler);
 * const id = await jobId(c, "p");
 * ```
 */
import type { MiddlewareHandler } from "hono";
import type { z } from "zod";
import { sha256Hex } from "../shared/blob_store.ts";
import { parseJson, readBody, validate } from "./body.ts";
import { type Edge, type EdgeContext, type EdgeEnv, idempotentId, newId } from "./context.ts";
import { ApiProblem } from "./problem.ts";

const TTL_MS = 24 * 3600_000;
const PENDING_MS = 5 * 60_000;

interface IdempotencyRecord {
  state: "pending" | "done";
  fingerprint: string;
  status?: number;
  headers?: Record<string, string>;
  body?: string;
}

function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (v && typeof v === "object") {
    return `{${
      Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`)
        .join(",")
    }}`;
  }
  return JSON.stringify(v);
}

/** A multipart form's fields, files by their content's hash (the boundary differs on every retry). */
async function formFingerprint(raw: Uint8Array<ArrayBuffer>, type: string): Promise<string | null> {
  try {
    const form = await new Request("http://form/", {
      method: "POST",
      headers: { "content-type": type },
      body: raw,
    })
      .formData();
    const fields: [string, string][] = [];
    for (const [k, v] of form.entries()) {
      fields.push([
        k,
        typeof v === "string" ? v : `file:${await sha256Hex(new Uint8Array(await v.arrayBuffer()))}`,
      ]);
    }
    return canonical(fields.sort((a, b) => a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : 1));
  } catch {
    return null;
  }
}

async function fingerprintOf(method: string, path: string, raw: Uint8Array<ArrayBuffer>, type: string) {
  let body: string | null = null;
  if (/^multipart\/form-data\b/i.test(type)) body = await formFingerprint(raw, type);
  if (body === null) {
    try {
      body = canonical(JSON.parse(new TextDecoder().decode(raw)));
    } catch {
      body = `bytes:${await sha256Hex(raw)}`;
    }
  }
  return sha256Hex(`${method} ${path}\n${body}`);
}

/** `maxBytes`: the largest body the route takes (default the JSON limit; uploads give theirs). */
export function idempotency(o: { maxBytes?: (edge: Edge) => number } = {}): MiddlewareHandler<EdgeEnv> {
  return async (c, next) => {
    const edge = c.get("edge");
    const raw = await readBody(c.req.raw, o.maxBytes?.(edge) ?? edge.maxJsonBytes);
    c.set("rawBody", raw);
    const key = c.req.header("idempotency-key");
    if (key === undefined) return await next();
    if (!/^[\x21-\x7e]{1,255}$/.test(key)) {
      throw new ApiProblem(
        400,
        "invalid-idempotency-key",
        "Invalid Idempotency-Key",
        "1 to 255 visible ASCII characters",
      );
    }
    const storeKey = ["idempotency", c.get("tenant").id, key];
    const fingerprint = await fingerprintOf(
      c.req.method,
      c.req.path,
      raw,
      c.req.header("content-type") ?? "",
    );
    for (let attempt = 0;; attempt++) {
      const rec = await edge.metadata.get<IdempotencyRecord>(storeKey);
      if (rec) {
        if (rec.fingerprint !== fingerprint) {
          throw new ApiProblem(
            422,
            "idempotency-key-reused",
            "Idempotency-Key reused",
            `the key "${key}" was used with different parameters (or another endpoint) in the last 24 hours`,
          );
        }
        if (rec.state === "pending") {
          throw new ApiProblem(
            409,
            "idempotency-key-in-use",
            "Request in progress",
            `a request with the key "${key}" is still running`,
            {
              headers: { "Retry-After": "1" },
            },
          );
        }
        return new Response(rec.body, {
          status: rec.status,
          headers: { ...rec.headers, "Idempotent-Replayed": "true" },
        });
      }
      if (
        await edge.metadata.create(storeKey, { state: "pending", fingerprint }, { expireInMs: PENDING_MS })
      ) break;
      if (attempt > 2) throw new Error("idempotency record keeps changing");
    }
    c.set("idempotencyKey", `${key}\n${fingerprint}`);
    try {
      await next();
    } finally {
      const res = c.res;
      if (res.status >= 200 && res.status < 300) {
        const headers: Record<string, string> = {};
        for (const h of ["content-type", "location", "preference-applied"]) {
          const v = res.headers.get(h);
          if (v) headers[h] = v;
        }
        const record: IdempotencyRecord = {
          state: "done",
          fingerprint,
          status: res.status,
          headers,
          body: await res.clone().text(),
        };
        await edge.metadata.set(storeKey, record, { expireInMs: TTL_MS });
      } else {
        await edge.metadata.delete(storeKey);
      }
    }
  };
}

/** The JSON body (read once by `idempotency()`, or now) validated by a schema. */
export async function jsonBody<S extends z.ZodType>(
  c: EdgeContext,
  schema: S,
  opts: { anyContentType?: boolean } = {},
): Promise<z.output<S>> {
  const type = c.req.header("content-type") ?? "";
  if (!opts.anyContentType && !/^application\/(.+\+)?json\b/i.test(type)) {
    throw new ApiProblem(
      415,
      "unsupported-media-type",
      "Unsupported Media Type",
      `expected application/json, got "${type}"`,
    );
  }
  const raw = c.get("rawBody") ?? await readBody(c.req.raw, c.get("edge").maxJsonBytes);
  return validate(schema, parseJson(raw));
}

/** A new job id: derived from the Idempotency-Key (and the request's fingerprint) when there is one. */
export function jobId(c: EdgeContext, prefix: string): Promise<string> {
  const key = c.get("idempotencyKey");
  return key ? idempotentId(prefix, c.get("tenant").id, c.req.path, key) : Promise.resolve(newId(prefix));
}
