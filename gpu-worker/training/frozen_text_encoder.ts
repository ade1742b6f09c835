/**
 * The folder's text encoder, frozen, as training needs it: captions (padded to the context length) to
 * `last_hidden_state` [n, L, D], each caption encoded once per encoder and cached, since a training run asks
 * for the same few prompts thousands of times.
 *
 * @example
 * ```ts
 * const text = await FrozenTextEncoder.create(runner, folder);
 * const ehs = await text.embed(["a red circle", ""]); // Tensor [2, L, D]
 * ```
 */
import { EXTRA_TOKENS_INPUT } from "../models/clip_text_model.ts";
import { type ModelFolder, textEncoderGraph } from "../models/model_folder.ts";
import type { EngineRunner, RemoteSession } from "../ort/runner.ts";
import { Tensor } from "../tensor.ts";

/** The text context length a folder's prompts are padded to. */
export function contextLength(folder: ModelFolder): number {
  return Math.min(folder.tokenizer.modelMaxLength, folder.textConfig.max_position_embeddings);
}

/** Token ids of `captions`, padded and truncated to the context length, flat [n * L]. */
export function tokenizeCaptions(folder: ModelFolder, captions: string[]): number[] {
  const L = contextLength(folder);
  return folder.tokenizer.call(captions, { maxLength: L, padding: "max_length", truncation: true }).inputIds
    .flat();
}

export class FrozenTextEncoder {
  private readonly cache = new Map<string, Float32Array>();

  private constructor(readonly folder: ModelFolder, private readonly session: RemoteSession) {}

  static async create(runner: EngineRunner, folder: ModelFolder): Promise<FrozenTextEncoder> {
    const g = textEncoderGraph(folder);
    return new FrozenTextEncoder(folder, await runner.createSession(g.toBytes(), { inputs: g.inputs }));
  }

  /** `last_hidden_state` of the captions, [n, L, D]. */
  async embed(captions: string[]): Promise<Tensor> {
    const L = contextLength(this.folder);
    const D = this.folder.textConfig.hidden_size;
    const missing = [...new Set(captions.filter((c) => !this.cache.has(c)))];
    if (missing.length) {
      const ids = Tensor.i64([missing.length, L], tokenizeCaptions(this.folder, missing));
      // Added tokens have no trained rows here: one zero row stands in for them.
      const { last_hidden_state } = await this.session.run({
        input_ids: ids,
        [EXTRA_TOKENS_INPUT]: Tensor.zeros([1, D]),
      }, ["last_hidden_state"]);
      missing.forEach((c, i) => this.cache.set(c, last_hidden_state.f.slice(i * L * D, (i + 1) * L * D)));
    }
    const out = new Float32Array(captions.length * L * D);
    captions.forEach((c, i) => out.set(this.cache.get(c)!, i * L * D));
    return Tensor.f32([captions.length, L, D], out);
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}
