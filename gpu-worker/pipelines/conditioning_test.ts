/**
 * The conditioning hook through the pipeline on the tiny model: per-block contexts, contexts of any length
 * (SeeCoder's 148 queries), regions (exactness where the answer is known), the per-call tokenizer overlay
 * (another request's prompt is never split differently because of a request's tokens), and the errors.
 */
import { assert, assertEquals, assertRejects } from "../testing.ts";
import { withTinyPipeline } from "./testing.ts";
import { crossAttentionPaths } from "../models/model_folder.ts";
import { Rng } from "../random.ts";
import { Tensor } from "../tensor.ts";

const O = { steps: 6, guidanceScale: 3, seed: 3 };

const withPipeline = withTinyPipeline;

const maxDiff = (a: { rgb: Uint8Array }, b: { rgb: Uint8Array }) =>
  a.rgb.reduce((m, v, i) => Math.max(m, Math.abs(v - b.rgb[i])), 0);

Deno.test("per-block contexts equal to the global one give the plain graph's exact pixels; one block's own context changes them", async () => {
  await withPipeline(async (p) => {
    const prompt = "a large red circle on the left, blue background";
    const plain = await p.generate({ ...O, prompt, n: 2 });
    const emb = await p.encodePrompt([prompt]);
    const paths = crossAttentionPaths(p.folder);
    assert(paths.length >= 2, `cross-attention modules: ${paths.length}`);
    const same = await p.generate({
      ...O,
      prompt,
      n: 2,
      blockContexts: Object.fromEntries(paths.map((path) => [path, emb])),
    });
    plain.images.forEach((img, i) => assertEquals(same.images[i].rgb, img.rgb, `image ${i}`));
    const other = await p.encodePrompt(["a small yellow star at the top, black background"]);
    const one = await p.generate({ ...O, prompt, n: 2, blockContexts: { [paths[0]]: other } });
    assert(maxDiff(one.images[0], plain.images[0]) > 20, "a block's own context must change the image");
  });
});

Deno.test("a SeeCoder-shaped context (148 tokens) runs through the UNet; a wrong width or batch is refused", async () => {
  await withPipeline(async (p) => {
    const D = p.folder.unetConfig.cross_attention_dim;
    const ctx = Tensor.f32([1, 148, D], new Rng(5).normal(148 * D));
    const a = await p.generate({ ...O, promptEmbeds: ctx, n: 2 });
    const b = await p.generate({ ...O, promptEmbeds: ctx, n: 2 });
    assertEquals(a.images.length, 2);
    assertEquals(a.images[0].rgb, b.images[0].rgb, "deterministic");
    // Without guidance the unconditional half is not run at all.
    await p.generate({ ...O, guidanceScale: 1, promptEmbeds: ctx });
    await assertRejects(
      () => p.generate({ ...O, promptEmbeds: Tensor.f32([1, 148, D + 1], new Float32Array(148 * (D + 1))) }),
      RangeError,
      `promptEmbeds must be [1 or 1, length, ${D}], got [1, 148, ${D + 1}]`,
    );
    await assertRejects(
      () => p.generate({ ...O, n: 2, promptEmbeds: Tensor.f32([3, 148, D], new Float32Array(3 * 148 * D)) }),
      RangeError,
      "must be [1 or 2, length",
    );
    await assertRejects(() => p.generate({ ...O }), RangeError, "give prompt or promptEmbeds");
    await assertRejects(
      () => p.generate({ ...O, prompt: "a red circle", blockContexts: { "mid_block.attn9": ctx } }),
      RangeError,
      'blockContexts: "mid_block.attn9" is not a cross-attention module',
    );
  });
});

Deno.test("regions: a whole-image region is its prompt exactly, two halves with one prompt are that prompt exactly, a half with another prompt changes the image", async () => {
  await withPipeline(async (p) => {
    const P = "a blue square on the right, white background", other = "a red circle, black background";
    const plain = await p.generate({ ...O, prompt: P });
    const full = await p.generate({ ...O, prompt: other, regions: [{ box: [0, 0, 1, 1], prompt: P }] });
    assertEquals(full.images[0].rgb, plain.images[0].rgb);
    const halves = await p.generate({
      ...O,
      prompt: other,
      regions: [{ box: [0, 0, 0.5, 1], prompt: P }, { box: [0.5, 0, 1, 1], prompt: P }],
    });
    assertEquals(halves.images[0].rgb, plain.images[0].rgb);
    const half = await p.generate({ ...O, prompt: P, regions: [{ box: [0, 0, 0.5, 1], prompt: other }] });
    assert(maxDiff(half.images[0], plain.images[0]) > 50);
    const soft = await p.generate({
      ...O,
      prompt: P,
      regions: [{ box: [0, 0, 0.5, 1], prompt: other, feather: 0.2 }],
    });
    assert(maxDiff(soft.images[0], half.images[0]) > 0, "feathered edges differ from hard ones");
    for (
      const [box, msg] of [
        [[0.5, 0, 0.5, 1], "x0 < x1"],
        [[0, 0, 1.2, 1], "in 0..1"],
        [[0.5, 0.5, 0.52, 0.52], "covers no latent pixel"],
      ] as const
    ) {
      await assertRejects(
        () => p.generate({ ...O, prompt: P, regions: [{ box, prompt: other }] }),
        RangeError,
        msg,
      );
    }
    await assertRejects(
      () => p.generate({ ...O, prompt: P, regions: [{ box: [0, 0, 1, 1] }] }),
      RangeError,
      "regions[0]: give prompt or promptEmbeds",
    );
  });
});

Deno.test("a request's tokens live in a per-call overlay: another request's identical prompt without them gives the base model's exact pixels", async () => {
  await withPipeline(async (p) => {
    const prompt = "a <new1> circle, white background";
    const before = await p.generate({ ...O, prompt });
    const red = p.tokenEmbedding(p.folder.tokenizer.encode("red")[0]);
    const withToken = await p.generate({ ...O, prompt, tokens: [{ token: "<new1>", embedding: red }] });
    assert(maxDiff(withToken.images[0], before.images[0]) > 20, "the token must change this request");
    const after = await p.generate({ ...O, prompt });
    assertEquals(after.images[0].rgb, before.images[0].rgb);
    assertEquals(
      p.folder.tokenizer.encode("<new1>").length > 1,
      true,
      "the shared tokenizer still splits <new1>",
    );
  });
});
