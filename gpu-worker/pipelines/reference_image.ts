/**
 * Prompt-Free Diffusion in the pipeline (METHODS.md 4): a reference image goes through the model folder's
 * SeeCoder (`<model>/seecoder/`, `../seecoder/`), whose embeddings [1, tokens, D] take the text encoder's
 * place as the conditional context of every cross-attention; the unconditional context is zeros of the same
 * shape (the official app's), and guidance defaults to 2.0 (the official default; its range is 0-10). The
 * prompt and the negative prompt are not read. Adapters (LoRA, sliders, Custom Diffusion K/V) act as with a
 * prompt; per-block contexts and regions whose context has the reference's length (e.g. regions given
 * SeeCoder embeddings of other references) mix with it; a region with a text prompt does not, since the text
 * context is 77 tokens long and the reference's is not (the pipeline says so).
 *
 * @example
 * ```ts
 * const { images } = await pipe.generate({ referenceImage: img, seed: 1 }); // CFG 2.0, zeros unconditional
 * ```
 */
import { JobInputError } from "../input_error.ts";
import { Tensor } from "../tensor.ts";
import type { GenerateOptions, StableDiffusionPipeline } from "./stable_diffusion.ts";
import { hasSeeCoder } from "../seecoder/folder.ts";

/** The official default guidance scale of reference-image generation. */
export const REFERENCE_GUIDANCE_SCALE = 2.0;

/** The conditional (SeeCoder's embeddings, one row set per image) and unconditional (zeros) contexts. */
export async function referenceContexts(
  pipe: StableDiffusionPipeline,
  o: GenerateOptions,
  n: number,
  cfg: boolean,
): Promise<{ cond: Tensor; uncond: Tensor | null }> {
  if (o.promptEmbeds || o.negativePromptEmbeds) {
    throw new JobInputError(
      "referenceImage replaces promptEmbeds / negativePromptEmbeds: give one or the other",
    );
  }
  const img = o.referenceImage!;
  if (!(img.width > 0 && img.height > 0 && img.rgb.length === img.width * img.height * 3)) {
    throw new JobInputError(`referenceImage: ${img.width}x${img.height} with ${img.rgb.length} values`);
  }
  if (!(await hasSeeCoder(pipe.folder.dir))) {
    throw new JobInputError(
      `this base model has no SeeCoder (${pipe.folder.dir}/seecoder/), so it cannot generate from a reference image`,
    );
  }
  const enc = await pipe.referenceEncoder();
  const D = pipe.folder.unetConfig.cross_attention_dim;
  if (enc.hidden !== D) {
    throw new JobInputError(
      `the SeeCoder gives ${enc.hidden}-wide embeddings, the UNet's cross-attention reads ${D}`,
    );
  }
  const one = await enc.encode([img]);
  const cond = n === 1 ? one : Tensor.concat(Array(n).fill(one));
  return { cond, uncond: cfg ? Tensor.zeros(cond.dims) : null };
}
