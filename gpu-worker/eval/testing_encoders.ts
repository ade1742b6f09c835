/**
 * Test support: tiny random stand-ins for DINO, CLIP image and CLIP text, built with the graph builder and saved
 * as ONNX in a model folder's `eval/` layout (see `image_text_encoders.ts`), so the evaluation's plumbing runs
 * without the real encoders (which cannot be downloaded here). Their scores mean nothing beyond "identical
 * inputs score 1"; they take 32 x 32 images and 16-token prompts from the tiny model's tokenizer.
 *
 * @example
 * ```ts
 * const dir = await evalFolder(await Deno.makeTempDir()); // <dir>/eval/{dino,clip_image,clip_text}.onnx, ...
 * await withEncoders(async (enc) => await subjectFidelity(enc, { generated, real }));
 * ```
 */
import { GraphBuilder } from "../graph/builder.ts";
import { conv2d, linear, toSequence } from "../graph/ops.ts";
import { EngineRunner } from "../ort/runner.ts";
import { EVAL_ENCODER_FILES, EvalEncoders } from "./image_text_encoders.ts";
import { Rng } from "../random.ts";

/** The committed tiny model, whose tokenizer serves as the CLIP tokenizer. */
export const TINY_MODEL = new URL("../../models/tiny-shapes", import.meta.url).pathname;
/** Image side the encoders take, the conv's channels (= DINO's token width), embedding size, prompt length. */
export const TEST_ENCODER_SIZES = { image: 32, width: 8, embed: 6, maxLength: 16 } as const;
/** Rows of the text encoder's embedding table: the tiny tokenizer's vocabulary. */
const TINY_VOCAB = 900;

const { image: SIZE, width: WIDTH, embed: EMBED, maxLength: MAX_LENGTH } = TEST_ENCODER_SIZES;

function weight(g: GraphBuilder, name: string, dims: number[], rng: Rng) {
  const n = dims.reduce((a, b) => a * b, 1);
  return g.initializer(name, { dtype: "float32", dims, data: rng.normal(n, 0.5) });
}

/**
 * An image encoder as ONNX bytes: pixel_values [N, 3, 32, 32] -> stride-4 conv, ReLU -> mean-pooled projection
 * (`image_embeds` [N, 6]), or the patch tokens (`last_hidden_state` [N, 64, 8]).
 */
export function imageEncoder(seed: number, output: "image_embeds" | "last_hidden_state"): Uint8Array {
  const rng = new Rng(seed);
  const g = new GraphBuilder("image_encoder");
  const x = g.input("pixel_values", "float32", ["batch", 3, SIZE, SIZE]);
  const h = g.op("Relu", [conv2d(g, x, weight(g, "patch", [WIDTH, 3, 4, 4], rng), null, { stride: 4 })]);
  if (output === "last_hidden_state") g.output(toSequence(g, h, WIDTH), "last_hidden_state");
  else {
    const pooled = g.op("ReduceMean", [h], { axes: [2, 3], keepdims: 0 });
    g.output(linear(g, pooled, weight(g, "proj", [EMBED, WIDTH], rng)), "image_embeds");
  }
  return g.toBytes();
}

/** A text encoder as ONNX bytes: input_ids [N, 16] -> embedding rows, mean over tokens, projection [N, 6]. */
export function textEncoder(seed: number, vocab: number = TINY_VOCAB): Uint8Array {
  const rng = new Rng(seed);
  const g = new GraphBuilder("text_encoder");
  const ids = g.input("input_ids", "int64", ["batch", MAX_LENGTH]);
  const rows = g.op("Gather", [weight(g, "embedding", [vocab, WIDTH], rng), ids]);
  const pooled = g.op("ReduceMean", [rows], { axes: [1], keepdims: 0 });
  g.output(linear(g, pooled, weight(g, "proj", [EMBED, WIDTH], rng)), "text_embeds");
  return g.toBytes();
}

/**
 * Writes the three encoders, the tiny model's tokenizer as `clip_tokenizer/` and an `encoders.json` with their
 * sizes into `<dir>/eval/`; returns `dir`. DINO outputs `dino` (default `last_hidden_state`, read at token 0).
 */
export async function evalFolder(
  dir: string,
  dino: "image_embeds" | "last_hidden_state" = "last_hidden_state",
): Promise<string> {
  const e = `${dir}/eval`;
  await Deno.mkdir(`${e}/${EVAL_ENCODER_FILES.clipTokenizer}`, { recursive: true });
  await Deno.writeFile(`${e}/${EVAL_ENCODER_FILES.dino}`, imageEncoder(1, dino));
  await Deno.writeFile(`${e}/${EVAL_ENCODER_FILES.clipImage}`, imageEncoder(2, "image_embeds"));
  await Deno.writeFile(`${e}/${EVAL_ENCODER_FILES.clipText}`, textEncoder(3));
  for (const f of ["vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"]) {
    await Deno.copyFile(`${TINY_MODEL}/tokenizer/${f}`, `${e}/${EVAL_ENCODER_FILES.clipTokenizer}/${f}`);
  }
  await Deno.writeTextFile(
    `${e}/${EVAL_ENCODER_FILES.config}`,
    JSON.stringify({
      dino: { image_size: SIZE },
      clip_image: { image_size: SIZE },
      clip_text: { max_length: MAX_LENGTH },
    }),
  );
  return dir;
}

/** Runs `fn` with the encoders of a fresh temporary {@link evalFolder}, then releases and removes everything. */
export async function withEncoders<T>(fn: (enc: EvalEncoders, dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "eval_encoders_test_" });
  const runner = new EngineRunner();
  try {
    const enc = await EvalEncoders.load(await evalFolder(dir), runner);
    try {
      return await fn(enc, dir);
    } finally {
      await enc.release();
    }
  } finally {
    runner.terminate();
    await Deno.remove(dir, { recursive: true });
  }
}
