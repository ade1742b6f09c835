/**
 * The edge's one error type: `ApiProblem` carries an RFC 9457 problem; the app turns every thrown problem
 * (and zod's validation errors) into an `application/problem+json` response in one place (`app.onError`).
 * A problem's `type` points at its explanation on the docs page.
 *
 * @example
 * ```ts
 * throw new ApiProblem(402, "insufficient-credits", "Insufficient credits", "this prediction costs 20, the balance is 5");
 * ```
 */
import type { z } from "zod";
import { type InvalidField, type Problem, PROBLEM_CONTENT_TYPE } from "../shared/problem.ts";

export class ApiProblem extends Error {
  constructor(
    readonly status: number,
    readonly slug: string,
    readonly title: string,
    readonly detail: string,
    readonly extra: { invalid_fields?: InvalidField[]; headers?: Record<string, string> } = {},
  ) {
    super(`${status} ${title}: ${detail}`);
    this.name = "ApiProblem";
  }

  toJSON(): Problem {
    return {
      type: this.slug === "about:blank" ? "about:blank" : `/docs#problem-${this.slug}`,
      title: this.title,
      status: this.status,
      detail: this.detail,
      ...(this.extra.invalid_fields ? { invalid_fields: this.extra.invalid_fields } : {}),
    };
  }
}

export const notFound = (what: string, id: string) =>
  new ApiProblem(404, "not-found", "Not Found", `no ${what} "${id}"`);

/** A zod failure as a 422 naming each refused field (`input.steps`, `input.colour`, ...). */
export function invalidRequest(error: z.ZodError, prefix: (string | number)[] = []): ApiProblem {
  const fields: InvalidField[] = [];
  for (const issue of error.issues) {
    const path = [...prefix, ...issue.path.map(String)];
    if (issue.code === "unrecognized_keys") {
      for (const k of issue.keys) fields.push({ name: [...path, k].join("."), reason: "unknown field" });
    } else {
      fields.push({ name: path.join(".") || "(body)", reason: issue.message });
    }
  }
  const detail = fields.map((f) => `${f.name}: ${f.reason}`).join("; ");
  return new ApiProblem(422, "invalid-request", "Invalid request", detail, { invalid_fields: fields });
}

export function problemResponse(p: ApiProblem, instance?: string): Response {
  const body = { ...p.toJSON(), ...(instance ? { instance } : {}) };
  return new Response(JSON.stringify(body), {
    status: p.status,
    headers: { "content-type": PROBLEM_CONTENT_TYPE, ...p.extra.headers },
  });
}
