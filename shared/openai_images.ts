/**
 * The OpenAI-compatible image routes' bodies (`POST /v1/images/generations`, `/edits`, `/variations`), as
 * OpenAI's images API and its official clients send them, and the answer `{created, data}`. `model` names a
 * base model, or `base:adapter` / `base:adapter@scale` (the adapter by id or name; a slider goes in as a
 * slider). Fields OpenAI defines that this server does not use (`quality`, `style`, ...) are accepted and named
 * in the `X-Ignored-Parameters` response header; `seed`, `steps`, `guidance_scale`, `negative_prompt` and
 * (edits) `strength` are this server's extensions.
 *
 * @example
 * ```ts
 * ImagesGenerationRequest.parse({ prompt: "a red circle", model: "tiny-shapes:rex@0.8", size: "64x64" });
 * ```
 */
import { z } from "zod";

const EXTENSIONS = {
  seed: z.coerce.number().int().min(0).max(2 ** 53 - 1).optional(),
  steps: z.coerce.number().int().min(1).max(200).optional(),
  guidance_scale: z.coerce.number().min(0).max(50).optional(),
  negative_prompt: z.string().max(2000).optional(),
};

const COMMON = {
  model: z.string().min(1).max(300).optional(),
  n: z.coerce.number().int().min(1).max(10).default(1),
  /** "WIDTHxHEIGHT"; "auto" (or absent): the base model's own size. */
  size: z.string().regex(/^(\d{1,4}x\d{1,4}|auto)$/, {
    message: 'a size is "WIDTHxHEIGHT" (e.g. "512x512") or "auto"',
  })
    .optional(),
  response_format: z.enum(["url", "b64_json"]).default("url"),
  user: z.string().max(500).optional(),
  ...EXTENSIONS,
};

/** The OpenAI fields accepted and not used; named back in `X-Ignored-Parameters`. */
export const IGNORED_OPENAI_FIELDS = [
  "quality",
  "style",
  "background",
  "moderation",
  "output_format",
  "output_compression",
  "input_fidelity",
  "partial_images",
  "stream",
] as const;

export const ImagesGenerationRequest = z.object({ prompt: z.string().min(1).max(2000), ...COMMON });
export type ImagesGenerationRequest = z.infer<typeof ImagesGenerationRequest>;

/** The form fields of edits (besides the files `image` and `mask`). */
export const ImagesEditFields = z.object({
  prompt: z.string().min(1).max(2000),
  ...COMMON,
  /** img2img: how far from the image to go (this server's extension; default 0.8). */
  strength: z.coerce.number().gt(0).max(1).optional(),
});
export type ImagesEditFields = z.infer<typeof ImagesEditFields>;

/** The form fields of variations (besides the file `image`). */
export const ImagesVariationFields = z.object({ ...COMMON });

export const ImagesResponse = z.object({
  created: z.number().int(),
  data: z.array(z.object({
    url: z.string().optional(),
    b64_json: z.string().optional(),
    revised_prompt: z.string().optional(),
  })),
});

/** OpenAI's error body. */
export const OpenAiError = z.object({
  error: z.object({
    message: z.string(),
    type: z.string(),
    param: z.string().nullable(),
    code: z.string().nullable(),
  }),
});
