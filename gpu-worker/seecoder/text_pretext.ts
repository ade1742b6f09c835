/**
 * A pretext task for a SeeCoder before its diffusion training (issue 22: "the backbone either trained first on
 * a pretext task or jointly"): the whole SeeCoder (backbone, decoder, query transformer) regresses, from a
 * render, the base model's own text-encoder states of the render's description - its first `tokens` rows
 * (BOS, the words, EOS and padding; the tiny model's captions fit in 20). The targets come from the frozen
 * text encoder, so the embeddings start where the frozen UNet already reads background, colour and shape,
 * and the diffusion loss (`trainer.ts`) then fine-tunes from there. Captions are used only in training; at
 * inference the SeeCoder sees the image alone.
 *
 * Loss: mean squared error over [B, tokens, hidden]. One ONNX graph: image [B, 3, H, W] -> SeeCoder ->
 * embeddings, the target as an input, the appended backward pass to every SeeCoder tensor.
 *
 * @example
 * ```ts
 * const p = await SeeCoderTextPretext.create(runner, rawConfig, { batch: 32, seed: 0, size: 64 });
 * const { loss, grads } = await p.computeGradients(images, await textTargets(pipe, captions, p.tokens));
 * ```
 */
import { GraphBuilder } from "../graph/builder.ts";
import { appendBackward } from "../graph/autodiff.ts";
import { ModelContext } from "../models/layers.ts";
import type { SafetensorsFile } from "../models/safetensors.ts";
import {
  buildSeeCoder,
  parseSeeCoderConfig,
  SEECODER_INPUT,
  SEECODER_PREFIX,
  type SeeCoderConfig,
  seecoderTokens,
} from "../models/seecoder.ts";
import type { EngineRunner, RemoteSession } from "../ort/runner.ts";
import type { StableDiffusionPipeline } from "../pipelines/stable_diffusion.ts";
import type { RgbImage } from "../image/png.ts";
import { Tensor } from "../tensor.ts";
import { unitImageTensor } from "./encoder.ts";
import {
  InitSource,
  lossAndGradients,
  seecoderParams,
  type SeeCoderTensor,
  seecoderTensors,
} from "./trainer.ts";

export interface TextPretextOptions {
  batch: number;
  /** Seed of the random init of every tensor `init` does not hold. */
  seed: number;
  /** Reference image side. */
  size: number;
  init?: SafetensorsFile;
}

/**
 * The first `tokens` rows of the text encoder's states for each caption: [captions, tokens, hidden]. Rows are
 * cached per caption in `cache` (ShapesWorld has a few thousand distinct descriptions).
 */
export async function textTargets(
  pipe: StableDiffusionPipeline,
  captions: string[],
  tokens: number,
  cache: Map<string, Float32Array>,
): Promise<Tensor> {
  const missing = [...new Set(captions.filter((c) => !cache.has(c)))];
  if (missing.length) {
    const states = await pipe.encodePrompt(missing);
    const [, L, D] = states.dims;
    if (L < tokens) {
      throw new RangeError(`the text encoder gives ${L} rows; the SeeCoder needs ${tokens} targets`);
    }
    missing.forEach((c, i) => cache.set(c, states.f.slice(i * L * D, (i * L + tokens) * D)));
  }
  const D = cache.get(captions[0])!.length / tokens;
  const out = Tensor.zeros([captions.length, tokens, D]);
  captions.forEach((c, i) => out.f.set(cache.get(c)!, i * tokens * D));
  return out;
}

export class SeeCoderTextPretext {
  private constructor(
    readonly config: SeeCoderConfig,
    readonly trained: SeeCoderTensor[],
    readonly all: SeeCoderTensor[],
    private readonly session: RemoteSession,
    readonly batch: number,
  ) {}

  static async create(
    runner: EngineRunner,
    rawConfig: Record<string, unknown>,
    o: TextPretextOptions,
  ): Promise<SeeCoderTextPretext> {
    const config = parseSeeCoderConfig(rawConfig);
    const g = new GraphBuilder("seecoder_text_pretext");
    const weights = InitSource.of(o.init, o.seed);
    const sc = new ModelContext(g, weights, { trainable: (n) => n.startsWith(SEECODER_PREFIX) });
    const emb = buildSeeCoder(sc, config, { batch: o.batch, height: o.size, width: o.size });
    const Q = seecoderTokens(config), D = config.qtransformer.hidden_dim;
    const target = g.input("text_target", "float32", [o.batch, Q, D]);
    const diff = g.op("Sub", [emb, target]);
    const loss = g.op("ReduceMean", [g.op("Mul", [diff, diff])], { keepdims: 0 });
    g.output(loss, "loss");
    const { trained, all } = seecoderTensors(sc, weights, o.init);
    const grads = appendBackward(g, loss, trained.map((t) => g.valueOf(t.name)));
    grads.forEach((gr, i) => g.output(gr, `grad.${trained[i].name}`));
    const session = await runner.createSession(g.toBytes(), { inputs: g.inputs });
    return new SeeCoderTextPretext(config, trained, all, session, o.batch);
  }

  /** Embedding rows the SeeCoder gives (and the targets hold). */
  get tokens(): number {
    return seecoderTokens(this.config);
  }

  /** Loss and gradients for `batch` renders and their text targets [batch, tokens, hidden]. */
  async computeGradients(
    images: RgbImage[],
    targets: Tensor,
  ): Promise<{ loss: number; grads: Record<string, Float32Array> }> {
    if (images.length !== this.batch || targets.dims[0] !== this.batch) {
      throw new RangeError(
        `expected ${this.batch} images and targets, got ${images.length}/${targets.dims[0]}`,
      );
    }
    const feeds = { [SEECODER_INPUT]: unitImageTensor(images), text_target: targets };
    return await lossAndGradients(this.session, feeds, this.trained);
  }

  params() {
    return seecoderParams(this.trained);
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}
