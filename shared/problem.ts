/**
 * RFC 9457 problem details: the one error body of the public API (`application/problem+json`).
 * `invalid_fields` names each refused request field by its dotted path, as zod reports it.
 *
 * @example
 * ```ts
 * const p: Problem = { type: "about:blank", title: "Not Found", status: 404, detail: "no prediction p_1" };
 * Problem.parse(p);
 * ```
 */
import { z } from "zod";

export const InvalidField = z.object({
  name: z.string().describe("dotted path of the field in the request, e.g. input.steps"),
  reason: z.string(),
});
export type InvalidField = z.infer<typeof InvalidField>;

export const Problem = z.object({
  type: z.string().describe("a URI naming the kind of problem, or about:blank"),
  title: z.string(),
  status: z.number().int(),
  detail: z.string(),
  instance: z.string().optional(),
  invalid_fields: z.array(InvalidField).optional(),
});
export type Problem = z.infer<typeof Problem>;

export const PROBLEM_CONTENT_TYPE = "application/problem+json";
