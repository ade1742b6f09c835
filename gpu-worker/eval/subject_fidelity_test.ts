/**
 * DINO / CLIP-I / CLIP-T plumbing on tiny random encoders (`testing_encoders.ts`) saved as ONNX in a model
 * folder's `eval/` layout: identical image sets score 1, different ones lower; CLIP-T is a cosine of the
 * prompt's and image's embeddings; a folder without encoders gives nulls; the paper's table is shown beside ours.
 */
import { assert, assertEquals, assertRejects, assertThrows } from "../testing.ts";
import { GraphBuilder } from "../graph/builder.ts";
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
import { TEST_ENCODER_SIZES, TINY_MODEL, withEncoders } from "./testing_encoders.ts";

const { width: WIDTH } = TEST_ENCODER_SIZES;

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
