/**
 * SeeCoder at inference: a session of the model folder's SeeCoder (`folder.ts`) that turns reference images
 * into the embeddings Prompt-Free Diffusion puts in the text encoder's place. Input images go in as the
 * official app gives them (raw RGB in [0, 1], no resize, no normalization); one graph with symbolic sizes
 * serves every image size, so a reference of any size works (the tiny model's SeeCoder was trained on 64x64).
 *
 * @example
 * ```ts
 * const enc = await SeeCoderEncoder.load("models/tiny-shapes", runner);
 * const embeds = await enc.encode([image]); // [1, tokens, hidden]
 * ```
 */
import { GraphBuilder } from "../graph/builder.ts";
import { ModelContext } from "../models/layers.ts";
import { WeightSource } from "../models/weights.ts";
import { buildSeeCoder, SEECODER_INPUT, SEECODER_OUTPUT } from "../models/seecoder.ts";
import type { EngineRunner, RemoteSession } from "../ort/runner.ts";
import type { ExecutionProvider } from "../ort/session.ts";
import { imagesToTensor, type RgbImage } from "../image/png.ts";
import { Tensor } from "../tensor.ts";
import { loadSeeCoderFolder, type SeeCoderFolder } from "./folder.ts";

/** Images (all of one size) as SeeCoder's input: [n, 3, H, W] float32 RGB in [0, 1]. */
export function unitImageTensor(images: RgbImage[]): Tensor {
  return imagesToTensor(images, "unit");
}

/** Builds the inference graph of a SeeCoder folder (symbolic batch and size). */
export function seecoderGraph(sc: SeeCoderFolder): GraphBuilder {
  const g = new GraphBuilder("seecoder");
  buildSeeCoder(new ModelContext(g, WeightSource.fromFiles([sc.weights])), sc.config, { prefix: sc.prefix });
  return g;
}

export class SeeCoderEncoder {
  private constructor(readonly folder: SeeCoderFolder, private readonly session: RemoteSession) {}

  /** Opens `<modelDir>/seecoder/` (or an already read folder) in the engine thread. */
  static async load(
    modelDir: string | SeeCoderFolder,
    runner: EngineRunner,
    opts: { ep?: ExecutionProvider } = {},
  ): Promise<SeeCoderEncoder> {
    const folder = typeof modelDir === "string" ? await loadSeeCoderFolder(modelDir) : modelDir;
    const g = seecoderGraph(folder);
    const session = await runner.createSession(g.toBytes(), { inputs: g.inputs }, opts.ep ?? "cpu");
    return new SeeCoderEncoder(folder, session);
  }

  /** Embedding rows per image and their width. */
  get tokens(): number {
    return this.folder.tokens;
  }
  get hidden(): number {
    return this.folder.hidden;
  }

  /** Encodes images of one size: [n, tokens, hidden]. Images of different sizes are encoded one by one. */
  async encode(images: RgbImage[]): Promise<Tensor> {
    if (!images.length) throw new RangeError("SeeCoder: no image to encode");
    const same = images.every((i) => i.width === images[0].width && i.height === images[0].height);
    if (!same) {
      const parts: Tensor[] = [];
      for (const img of images) parts.push(await this.encode([img]));
      return Tensor.concat(parts);
    }
    const out = await this.session.run({ [SEECODER_INPUT]: unitImageTensor(images) }, [SEECODER_OUTPUT]);
    return out[SEECODER_OUTPUT];
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}
