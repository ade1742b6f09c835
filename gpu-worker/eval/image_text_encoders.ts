/**
 * The image and text encoders of subject-driven evaluation (DINO, CLIP image, CLIP text) as ONNX files shipped
 * beside a model, run through the engine thread. A model folder provides any subset of them:
 *
 * ```
 * <model>/eval/
 *   dino.onnx          pixel_values f32 [N, 3, S, S] -> image_embeds f32 [N, D]
 *                      (DINO ViT-S/16: the last layer's [CLS] token; a graph that outputs `last_hidden_state`
 *                      [N, T, D] instead is read at token 0)
 *   clip_image.onnx    pixel_values f32 [N, 3, S, S] -> image_embeds f32 [N, D]   (CLIPVisionModelWithProjection)
 *   clip_text.onnx     input_ids i64 [N, L] (+ attention_mask i64 [N, L] when encoders.json says so)
 *                      -> text_embeds f32 [N, D]                                  (CLIPTextModelWithProjection)
 *   clip_tokenizer/    the CLIP text model's tokenizer (vocab.json + merges.txt, or tokenizer.json)
 *   encoders.json      optional: per encoder `image_size`, `mean`, `std`; for clip_text `max_length`,
 *                      `attention_mask` (boolean)
 * ```
 *
 * Images are resized (shorter side to S, PIL-style bilinear; the reference models use bicubic), center-cropped
 * to S x S and normalized with the encoder's mean and std (defaults: ImageNet's for DINO, CLIP's for CLIP).
 * Embeddings come back L2-normalized.
 *
 * @example
 * ```ts
 * const enc = await EvalEncoders.load("models/sd15", runner);
 * const e = await enc.dino?.embedImages(images); // unit vectors, one per image
 * await enc.release();
 * ```
 */
import type { EngineRunner, RemoteSession } from "../ort/runner.ts";
import type { RgbImage } from "../image/png.ts";
import { applyVariant, chooseVariant, resizeShorterSide } from "../training/data.ts";
import { ClipTokenizer } from "../tokenizer/clip_tokenizer.ts";
import { Tensor } from "../tensor.ts";
import { pathExists as exists } from "../fs.ts";

/** File names inside `<model>/eval/`. */
export const EVAL_ENCODER_FILES = {
  dino: "dino.onnx",
  clipImage: "clip_image.onnx",
  clipText: "clip_text.onnx",
  clipTokenizer: "clip_tokenizer",
  config: "encoders.json",
} as const;

/** ImageNet statistics (DINO's preprocessing). */
export const IMAGENET_MEAN = [0.485, 0.456, 0.406] as const;
export const IMAGENET_STD = [0.229, 0.224, 0.225] as const;
/** CLIP's preprocessing statistics. */
export const CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073] as const;
export const CLIP_STD = [0.26862954, 0.26130258, 0.27577711] as const;

/** How an image encoder wants its pixels. */
export interface ImagePreprocessing {
  imageSize: number;
  mean: readonly number[];
  std: readonly number[];
}

/** Images per engine run (bounds memory at 224 px: 16 x 3 x 224 x 224 floats). */
const IMAGE_BATCH = 16;

function unit(v: Float32Array): Float32Array {
  let n = 0;
  for (const x of v) n += x * x;
  const s = n > 0 ? 1 / Math.sqrt(n) : 0;
  return v.map((x) => x * s);
}

/** Resize, center crop and normalize images into NCHW pixel values. */
export function preprocessImages(images: RgbImage[], p: ImagePreprocessing): Tensor {
  const S = p.imageSize;
  const t = Tensor.zeros([images.length, 3, S, S]);
  images.forEach((img, n) => {
    const resized = resizeShorterSide(img, S);
    const crop = applyVariant(resized, chooseVariant(resized.width, resized.height, { resolution: S }), S);
    for (let i = 0; i < S * S; i++) {
      for (let c = 0; c < 3; c++) {
        t.f[(n * 3 + c) * S * S + i] = (crop.rgb[i * 3 + c] / 255 - p.mean[c]) / p.std[c];
      }
    }
  });
  return t;
}

/** An ONNX image encoder: images -> unit embeddings. */
export class ImageEncoder {
  constructor(
    readonly name: string,
    private readonly session: RemoteSession,
    readonly preprocessing: ImagePreprocessing,
  ) {
    if (!session.outputNames.includes("image_embeds") && !session.outputNames.includes("last_hidden_state")) {
      throw new TypeError(
        `${name}: expected an output "image_embeds" [N, D] or "last_hidden_state" [N, T, D], ` +
          `got ${session.outputNames.join(", ")}`,
      );
    }
  }

  async embedImages(images: RgbImage[]): Promise<Float32Array[]> {
    const out: Float32Array[] = [];
    for (let start = 0; start < images.length; start += IMAGE_BATCH) {
      const chunk = images.slice(start, start + IMAGE_BATCH);
      const pixels = preprocessImages(chunk, this.preprocessing);
      const direct = this.session.outputNames.includes("image_embeds");
      const name = direct ? "image_embeds" : "last_hidden_state";
      const r = (await this.session.run({ pixel_values: pixels }, [name]))[name];
      const D = r.dims[r.dims.length - 1];
      const stride = direct ? D : r.dims[1] * D; // last_hidden_state: token 0 ([CLS]) of each row
      for (let n = 0; n < chunk.length; n++) out.push(unit(r.f.slice(n * stride, n * stride + D)));
    }
    return out;
  }

  release(): Promise<void> {
    return this.session.release();
  }
}

/** An ONNX CLIP text encoder with its tokenizer: texts -> unit embeddings. */
export class ClipTextEncoder {
  constructor(
    private readonly session: RemoteSession,
    readonly tokenizer: ClipTokenizer,
    readonly maxLength: number,
    readonly attentionMask: boolean,
  ) {
    if (!session.outputNames.includes("text_embeds")) {
      throw new TypeError(
        `clip_text: expected an output "text_embeds" [N, D], got ${session.outputNames.join(", ")}`,
      );
    }
  }

  async embedTexts(texts: string[]): Promise<Float32Array[]> {
    if (!texts.length) return [];
    const L = this.maxLength;
    const enc = this.tokenizer.call(texts, { maxLength: L, padding: "max_length", truncation: true });
    const feeds: Record<string, Tensor> = { input_ids: Tensor.i64([texts.length, L], enc.inputIds.flat()) };
    if (this.attentionMask) feeds.attention_mask = Tensor.i64([texts.length, L], enc.attentionMask.flat());
    const r = (await this.session.run(feeds, ["text_embeds"])).text_embeds;
    const D = r.dims[1];
    return texts.map((_, n) => unit(r.f.slice(n * D, (n + 1) * D)));
  }

  release(): Promise<void> {
    return this.session.release();
  }
}

interface EncodersJson {
  dino?: { image_size?: number; mean?: number[]; std?: number[] };
  clip_image?: { image_size?: number; mean?: number[]; std?: number[] };
  clip_text?: { max_length?: number; attention_mask?: boolean };
}

function checkStats(file: string, key: string, v: unknown): number[] | undefined {
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || v.length !== 3 || !v.every((x) => typeof x === "number" && Number.isFinite(x))) {
    throw new TypeError(`${file}: ${key} must be 3 numbers, got ${JSON.stringify(v)}`);
  }
  return v;
}

/** Whichever of DINO, CLIP image and CLIP text a model folder provides. */
export class EvalEncoders {
  private constructor(
    readonly dino: ImageEncoder | null,
    readonly clipImage: ImageEncoder | null,
    readonly clipText: ClipTextEncoder | null,
  ) {}

  /** True when `<model>/eval/` holds at least one encoder. */
  static async available(modelDir: string): Promise<boolean> {
    const dir = `${modelDir}/eval`;
    for (const f of [EVAL_ENCODER_FILES.dino, EVAL_ENCODER_FILES.clipImage, EVAL_ENCODER_FILES.clipText]) {
      if (await exists(`${dir}/${f}`)) return true;
    }
    return false;
  }

  /** Opens the encoders found under `<model>/eval/` (none found: all null). */
  static async load(modelDir: string, runner: EngineRunner): Promise<EvalEncoders> {
    const dir = `${modelDir}/eval`;
    const configPath = `${dir}/${EVAL_ENCODER_FILES.config}`;
    let cfg: EncodersJson = {};
    if (await exists(configPath)) {
      try {
        cfg = JSON.parse(await Deno.readTextFile(configPath));
      } catch (e) {
        throw new SyntaxError(`${configPath}: not valid JSON (${(e as Error).message})`);
      }
    }
    const image = async (
      key: "dino" | "clip_image",
      file: string,
      mean: readonly number[],
      std: readonly number[],
    ): Promise<ImageEncoder | null> => {
      const path = `${dir}/${file}`;
      if (!(await exists(path))) return null;
      const c = cfg[key] ?? {};
      const size = c.image_size ?? 224;
      if (!(Number.isInteger(size) && size >= 8 && size <= 1024)) {
        throw new RangeError(`${configPath}: ${key}.image_size must be an integer in 8..1024, got ${size}`);
      }
      const session = await runner.createSession(path, {
        inputs: [{ name: "pixel_values", dtype: "float32", shape: ["batch", 3, size, size] }],
      });
      try {
        return new ImageEncoder(key, session, {
          imageSize: size,
          mean: checkStats(configPath, `${key}.mean`, c.mean) ?? mean,
          std: checkStats(configPath, `${key}.std`, c.std) ?? std,
        });
      } catch (e) {
        await session.release();
        throw e;
      }
    };
    const dino = await image("dino", EVAL_ENCODER_FILES.dino, IMAGENET_MEAN, IMAGENET_STD);
    const clipImage = await image("clip_image", EVAL_ENCODER_FILES.clipImage, CLIP_MEAN, CLIP_STD);
    let clipText: ClipTextEncoder | null = null;
    const textPath = `${dir}/${EVAL_ENCODER_FILES.clipText}`;
    if (await exists(textPath)) {
      const c = cfg.clip_text ?? {};
      const L = c.max_length ?? 77;
      if (!(Number.isInteger(L) && L >= 2 && L <= 1024)) {
        throw new RangeError(`${configPath}: clip_text.max_length must be an integer in 2..1024, got ${L}`);
      }
      const tokDir = `${dir}/${EVAL_ENCODER_FILES.clipTokenizer}`;
      if (!(await exists(tokDir))) {
        throw new Error(
          `${textPath} needs its tokenizer in ${tokDir}/ (vocab.json + merges.txt or tokenizer.json)`,
        );
      }
      const tokenizer = await ClipTokenizer.fromModelFolder(dir, {
        subfolder: EVAL_ENCODER_FILES.clipTokenizer,
      });
      const mask = c.attention_mask ?? false;
      const inputs = [{ name: "input_ids", dtype: "int64" as const, shape: ["batch", L] }];
      if (mask) inputs.push({ name: "attention_mask", dtype: "int64", shape: ["batch", L] });
      const session = await runner.createSession(textPath, { inputs });
      try {
        clipText = new ClipTextEncoder(session, tokenizer, L, mask);
      } catch (e) {
        await session.release();
        throw e;
      }
    }
    return new EvalEncoders(dino, clipImage, clipText);
  }

  async release(): Promise<void> {
    await this.dino?.release();
    await this.clipImage?.release();
    await this.clipText?.release();
  }
}
