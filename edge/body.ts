/**
 * Request bodies read under a byte limit that counts the bytes as they stream in: a missing or lying
 * Content-Length cannot get more than `max` bytes into memory. Over the limit: 413 problem.
 *
 * @example
 * ```ts
 * const bytes = await readBody(c.req.raw, 1 << 20);
 * const body = validate(CreatePredictionRequest, parseJson(bytes));
 * ```
 */
import type { z } from "zod";
import { ApiProblem, invalidRequest } from "./problem.ts";

export function tooLarge(max: number, what = "request body"): ApiProblem {
  return new ApiProblem(413, "too-large", "Content Too Large", `the ${what} is larger than ${max} bytes`);
}

export async function readBody(req: Request, max: number): Promise<Uint8Array<ArrayBuffer>> {
  const declared = Number(req.headers.get("content-length") ?? NaN);
  if (declared > max) throw tooLarge(max);
  if (!req.body) return new Uint8Array();
  const reader = req.body.getReader();
  const parts: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > max) {
      await reader.cancel().catch(() => {});
      throw tooLarge(max);
    }
    parts.push(value);
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) out.set(p, at), at += p.byteLength;
  return out;
}

export function parseJson(bytes: Uint8Array): unknown {
  if (!bytes.byteLength) {
    throw new ApiProblem(400, "malformed-body", "Malformed body", "expected a JSON body, got none");
  }
  try {
    return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (e) {
    throw new ApiProblem(
      400,
      "malformed-body",
      "Malformed body",
      `the body is not JSON: ${(e as Error).message}`,
    );
  }
}

/** Parses a body with a schema: 400 for bad JSON, 422 naming the invalid fields. */
export function validate<S extends z.ZodType>(schema: S, value: unknown): z.output<S> {
  const r = schema.safeParse(value);
  if (!r.success) throw invalidRequest(r.error);
  return r.data;
}
