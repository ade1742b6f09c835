/**
 * DINO / CLIP-I / CLIP-T plumbing on tiny random encoders built with the graph builder and saved as ONNX in a
 * model folder's `eval/` layout: identical image sets score 1, different ones lower; CLIP-T is a cosine of the
 * prompt's and image's embeddings; a folder without encoders gives nulls; the paper's table is shown beside ours.
 */
import { assert, assertEquals, assertRejects, assertThrows } from "../testing.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { conv2d, linear, toSequence } from "../graph/ops.ts";
import { EngineRunner } from "../ort/runner.ts";
import { EVAL_ENCODER_FILES, EvalEncoders } from "./image_text_encoders.ts";
import {
  cosineSimilarity,
  DREAMBOOTH_OBJECT_PROMPTS,
  DREAMBOOTH_PAPER_TABLE,
  meanMatchedCosine,
  meanPairwiseCosine,
  paperComparisonTable,
  subjectFidelity,
} from "./subject_fidelity.ts";
import { renderScene } from "../shapesworld/render.ts";
import { sampleScene } from "../shapesworld/world.ts";
import { Rng } from "../random.ts";

const TINY_MODEL = new URL("../../models/tiny-shapes", import.meta.url).pathname;
const SIZE = 32, WIDTH = 8, EMBED = 6, MAX_LENGTH = 16;

function weight(g: GraphBuilder, name: string, dims: number[], rng: Rng) {
  const n = dims.reduce((a, b) => a * b, 1);
  return g.initializer(name, { dtype: "float32", dims, data: rng.normal(n, 0.5) });
}

/** pixel_values [N, 3, S, S] -> stride-4 conv, ReLU -> mean-pooled projection, or the patch tokens. */
function imageEncoder(seed: number, output: "image_embeds" | "last_hidden_state"): Uint8Array {
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

/** input_ids [N, L] -> embedding rows, mean over tokens, projection. */
function textEncoder(seed: number, vocab: number): Uint8Array {
  const rng = new Rng(seed);
  const g = new GraphBuilder("text_encoder");
  const ids = g.input("input_ids", "int64", ["batch", MAX_LENGTH]);
  const rows = g.op("Gather", [weight(g, "embedding", [vocab, WIDTH], rng), ids]);
  const pooled = g.op("ReduceMean", [rows], { axes: [1], keepdims: 0 });
  g.output(linear(g, pooled, weight(g, "proj", [EMBED, WIDTH], rng)), "text_embeds");
  return g.toBytes();
}

/** A model folder holding only the eval encoders (the tiny model's tokenizer as the CLIP tokenizer). */
async function evalFolder(dir: string, dino: "image_embeds" | "last_hidden_state" = "last_hidden_state") {
  const e = `${dir}/eval`;
  await Deno.mkdir(`${e}/${EVAL_ENCODER_FILES.clipTokenizer}`, { recursive: true });
  await Deno.writeFile(`${e}/${EVAL_ENCODER_FILES.dino}`, imageEncoder(1, dino));
  await Deno.writeFile(`${e}/${EVAL_ENCODER_FILES.clipImage}`, imageEncoder(2, "image_embeds"));
  await Deno.writeFile(`${e}/${EVAL_ENCODER_FILES.clipText}`, textEncoder(3, 900));
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

async function withEncoders<T>(fn: (enc: EvalEncoders, dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "subject_fidelity_test_" });
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

const images = (seed: number, n: number, background: "white" | "blue") =>
  Array.from(
    { length: n },
    (_, i) =>
      renderScene(sampleScene(new Rng(seed * 100 + i), { objectCount: 1, backgrounds: [background] }), 64),
  );

Deno.test("cosine metrics: pairwise mean (DINO, CLIP-I) and matched mean (CLIP-T)", () => {
  assertEquals(cosineSimilarity([1, 0], [2, 0]), 1);
  assertEquals(cosineSimilarity([1, 0], [0, 0]), 0);
  assertEquals(meanPairwiseCosine([[1, 0]], [[1, 0], [0, 1]]), 0.5);
  assertEquals(meanMatchedCosine([[1, 0], [0, 1]], [[1, 0], [1, 0]]), 0.5);
  assertThrows(() => meanPairwiseCosine([], [[1]]), RangeError, "both sides");
  assertThrows(() => meanMatchedCosine([[1]], [[1], [1]]), RangeError, "as many");
  assertThrows(() => cosineSimilarity([1], [1, 2]), RangeError);
});

Deno.test("the paper's Table 1 and prompts are kept as published, and shown beside our rows", () => {
  assertEquals(DREAMBOOTH_PAPER_TABLE["Real images"], { dino: 0.774, clip_i: 0.885, clip_t: null });
  assertEquals(DREAMBOOTH_PAPER_TABLE["DreamBooth (Stable Diffusion)"], {
    dino: 0.668,
    clip_i: 0.803,
    clip_t: 0.305,
  });
  assertEquals(DREAMBOOTH_OBJECT_PROMPTS.length, 25);
  const table = paperComparisonTable({ "ours (tiny)": { dino: 0.5, clip_i: null, clip_t: 0.25 } });
  assert(table.includes("| DreamBooth (Stable Diffusion) (paper) | 0.668 | 0.803 | 0.305 |"), table);
  assert(table.includes("| ours (tiny) | 0.500 | - | 0.250 |"), table);
});

Deno.test("ONNX encoders from <model>/eval: identical images score 1, different images lower", async () => {
  await withEncoders(async (enc) => {
    assert(enc.dino && enc.clipImage && enc.clipText, "all three encoders found");
    const a = images(1, 3, "white"), b = images(2, 3, "blue");
    const same = await subjectFidelity(enc, { generated: [a[0]], real: [a[0]] });
    assert(Math.abs(same.dino! - 1) < 1e-5 && Math.abs(same.clip_i! - 1) < 1e-5, JSON.stringify(same));
    assertEquals(same.clip_t, null, "no prompts, no CLIP-T");

    const self = await subjectFidelity(enc, { generated: a, real: a });
    const other = await subjectFidelity(enc, { generated: b, real: a });
    assert(other.dino! < self.dino! && other.clip_i! < self.clip_i!, JSON.stringify({ self, other }));

    // This DINO graph outputs last_hidden_state: its first token, as a unit vector.
    const [e] = await enc.dino!.embedImages([a[0]]);
    assertEquals(e.length, WIDTH);
    assert(Math.abs(Math.hypot(...e) - 1) < 1e-5, "embeddings are unit vectors");
  });
});

Deno.test("CLIP-T is the mean cosine of each image with its prompt, deterministic and in [-1, 1]", async () => {
  await withEncoders(async (enc) => {
    const imgs = images(3, 2, "white");
    const prompts = ["a sks star, blue background", "a red circle"];
    const r1 = await subjectFidelity(enc, { generated: imgs, real: imgs, prompts });
    const r2 = await subjectFidelity(enc, { generated: imgs, real: imgs, prompts });
    assertEquals(r1, r2);
    assert(r1.clip_t !== null && r1.clip_t >= -1 && r1.clip_t <= 1, `${r1.clip_t}`);
    const ie = await enc.clipImage!.embedImages(imgs), te = await enc.clipText!.embedTexts(prompts);
    assertEquals(r1.clip_t, meanMatchedCosine(ie, te));
    const [x, y] = await enc.clipText!.embedTexts(["a red circle", "a red circle"]);
    assertEquals(x, y);
    await assertRejects(
      () => subjectFidelity(enc, { generated: imgs, real: imgs, prompts: ["one"] }),
      RangeError,
    );
  });
});

Deno.test("a model folder without eval encoders gives null scores; a wrong output name is refused", async () => {
  const runner = new EngineRunner();
  const dir = await Deno.makeTempDir({ prefix: "subject_fidelity_test_" });
  try {
    assertEquals(await EvalEncoders.available(TINY_MODEL), false);
    const none = await EvalEncoders.load(TINY_MODEL, runner);
    const imgs = images(4, 1, "white");
    assertEquals(await subjectFidelity(none, { generated: imgs, real: imgs, prompts: ["a"] }), {
      dino: null,
      clip_i: null,
      clip_t: null,
    });
    await Deno.mkdir(`${dir}/eval`);
    const g = new GraphBuilder("bad");
    g.output(g.op("Identity", [g.input("pixel_values", "float32", ["batch", 3, 224, 224])]), "features");
    await Deno.writeFile(`${dir}/eval/${EVAL_ENCODER_FILES.clipImage}`, g.toBytes());
    assertEquals(await EvalEncoders.available(dir), true);
    await assertRejects(() => EvalEncoders.load(dir, runner), TypeError, `expected an output "image_embeds"`);
  } finally {
    runner.terminate();
    await Deno.remove(dir, { recursive: true });
  }
});
