/**
 * Errors of the OpenAI-compatible routes (`/v1/images/*`) in OpenAI's shape, `{error: {message, type, param,
 * code}}`, with the same status and headers (Retry-After, RateLimit) the native problem would have. The app's
 * error handler uses it for every failure under those paths, auth and rate limits included; `param` names the
 * OpenAI field (`n`, `size`, `model`, ...) where the problem names one of the prediction's.
 *
 * @example
 * ```ts
 * openAiErrorResponse(new ApiProblem(402, "insufficient-credits", "Insufficient credits", "costs 20, balance 5"));
 * ```
 */
import type { ApiProblem } from "./problem.ts";

export const OPENAI_PATHS = /^\/v1\/images\//;

/** Native field names -> the OpenAI field they come from. */
const PARAMS: [RegExp, string][] = [
  [/^(input\.)?num_outputs$/, "n"],
  [/^(input\.)?(width|height)$/, "size"],
  [/^base_model$|^input\.(adapters|sliders)\b/, "model"],
  [/^(input\.)?prompt$/, "prompt"],
  [/^input\.(image|reference_image)$/, "image"],
  [/^input\.mask$/, "mask"],
  [/^input\.strength$/, "strength"],
  [/^input\.steps$/, "steps"],
  [/^input\.seed$/, "seed"],
  [/^input\.guidance_scale$/, "guidance_scale"],
  [/^input\.negative_prompt$/, "negative_prompt"],
];

function typeOf(status: number): string {
  if (status === 401) return "authentication_error";
  if (status === 402) return "insufficient_quota";
  if (status === 429) return "rate_limit_error";
  if (status >= 500 && status !== 501) return "server_error";
  return "invalid_request_error";
}

export function openAiParam(field: string | undefined): string | null {
  if (!field) return null;
  for (const [re, param] of PARAMS) if (re.test(field)) return param;
  return field;
}

export function openAiErrorResponse(p: ApiProblem): Response {
  const body = {
    error: {
      message: p.detail,
      type: typeOf(p.status),
      param: openAiParam(p.extra.invalid_fields?.[0]?.name),
      code: p.slug === "about:blank" ? null : p.slug.replaceAll("-", "_"),
    },
  };
  return new Response(JSON.stringify(body), {
    status: p.status,
    headers: { "content-type": "application/json", ...p.extra.headers },
  });
}
