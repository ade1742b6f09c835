import { assert, assertEquals, assertRejects, assertThrows, relativeError } from "../testing.ts";
import { randomLora, withTinyPipeline } from "./testing.ts";
import { encodePng } from "../image/png.ts";
import { Rng } from "../random.ts";
import { renderScene } from "../shapesworld/render.ts";
import { sampleTrainScene } from "../shapesworld/world.ts";

const withPipeline = withTinyPipeline;

const pixels = (imgs: { rgb: Uint8Array }[]) => Float32Array.from(imgs.flatMap((i) => Array.from(i.rgb)));

Deno.test("txt2img is deterministic by seed: same seed same bytes, another seed other bytes", async () => {
  await withPipeline(async (p) => {
    const o = { prompt: "a large red circle on the left, blue background", steps: 6, n: 2 };
    const a = await p.generate({ ...o, seed: 7 });
    const b = await p.generate({ ...o, seed: 7 });
    const c = await p.generate({ ...o, seed: 8 });
    assertEquals(a.images.length, 2);
    assertEquals([a.images[0].width, a.images[0].height], [64, 64]);
    assertEquals(encodePng(a.images[0]), encodePng(b.images[0]));
    assertEquals(encodePng(a.images[1]), encodePng(b.images[1]));
    assert(
      relativeError(pixels(a.images), pixels(c.images)) > 0.01,
      "another seed should give another image",
    );
  });
});

Deno.test("every scheduler runs and reports each step; guidance and negative prompt change the result", async () => {
  await withPipeline(async (p) => {
    for (const scheduler of ["ddim", "ddpm", "euler", "euler_a", "dpmpp_2m"] as const) {
      const steps: number[] = [];
      let preview: { width: number }[] = [];
      const r = await p.generate({
        prompt: "a blue square",
        seed: 1,
        steps: 5,
        scheduler,
        onStep: async (s) => {
          steps.push(s.step);
          if (s.step === 3) preview = await s.preview();
        },
      });
      assertEquals(steps, [1, 2, 3, 4, 5], scheduler);
      assertEquals(preview.map((i) => i.width), [64]);
      assert(r.images[0].rgb.some((v) => v !== r.images[0].rgb[0]), `${scheduler} gave a flat image`);
    }
    const base = await p.generate({ prompt: "a blue square", seed: 1, steps: 5, guidanceScale: 7.5 });
    const noCfg = await p.generate({ prompt: "a blue square", seed: 1, steps: 5, guidanceScale: 1 });
    const neg = await p.generate({ prompt: "a blue square", negativePrompt: "red", seed: 1, steps: 5 });
    const rescaled = await p.generate({ prompt: "a blue square", seed: 1, steps: 5, guidanceRescale: 0.7 });
    assertEquals(base.timings.unetEvals, 5);
    assert(relativeError(pixels(base.images), pixels(noCfg.images)) > 1e-3);
    assert(relativeError(pixels(base.images), pixels(neg.images)) > 1e-3);
    assert(
      relativeError(pixels(base.images), pixels(rescaled.images)) > 1e-3,
      "guidanceRescale reaches the steps",
    );
  });
});

Deno.test("img2img: low strength stays near the input image, high strength moves away", async () => {
  await withPipeline(async (p) => {
    // A rendered scene, like an uploaded photo. (Not a generated image: on the pretrained model an 8-step
    // sample of a prompt without a background is off the VAE's image distribution, and its encode-decode round
    // trip alone moved it 0.25, so even strength 0.1 landed far from it.)
    const src = renderScene(sampleTrainScene(new Rng(0), { objectCount: 1 }), 64);
    const near = await p.generate({ prompt: "a green star", seed: 4, steps: 10, image: src, strength: 0.2 });
    const far = await p.generate({ prompt: "a green star", seed: 4, steps: 10, image: src, strength: 1 });
    assertEquals(near.timings.unetEvals, 2);
    const dNear = relativeError(pixels(near.images), pixels([src]));
    const dFar = relativeError(pixels(far.images), pixels([src]));
    assert(dNear < dFar, `strength 0.2 moved ${dNear}, strength 1 moved ${dFar}`);
  });
});

Deno.test("inpainting: a mask needs its image, the same size, and at least one pixel to repaint", async () => {
  await withPipeline(async (p) => {
    const src = renderScene(sampleTrainScene(new Rng(0), { objectCount: 1 }), 64);
    const all = (v: number, w = 64, h = 64) => ({
      width: w,
      height: h,
      repaint: new Uint8Array(w * h).fill(v),
    });
    const o = { prompt: "a green star", seed: 1, steps: 2 };
    await assertRejects(
      () => p.generate({ ...o, mask: all(1) }),
      Error,
      "a mask needs the image it repaints",
    );
    await assertRejects(
      () => p.generate({ ...o, image: src, mask: all(1, 32, 32) }),
      Error,
      "the mask is 32x32, expected the image's size 64x64",
    );
    await assertRejects(
      () => p.generate({ ...o, image: src, mask: all(0) }),
      Error,
      "the mask repaints no pixel",
    );
    // A mask that repaints everything at strength 1 is the prompt's txt2img from the same noise.
    const full = await p.generate({ ...o, image: src, mask: all(1) });
    const txt = await p.generate(o);
    assertEquals(encodePng(full.images[0]), encodePng(txt.images[0]));
  });
});

Deno.test("LoRA slots: scale 0 is a no-op, scales add up across adapters, and scales can change per step", async () => {
  await withPipeline(async (p) => {
    assert(
      p.loraModules.length > 0 &&
        p.loraModules.every((m) => /attn[12]\.(to_q|to_k|to_v|to_out\.0)$/.test(m.path)),
    );
    const lora = randomLora(p, 11);
    const o = { prompt: "a red circle", seed: 5, steps: 4 };
    const plain = pixels((await p.generate(o)).images);
    const zero = pixels((await p.generate({ ...o, adapters: [{ lora, scale: 0 }] })).images);
    assertEquals(Array.from(zero), Array.from(plain));
    const two = pixels((await p.generate({ ...o, adapters: [{ lora, scale: 2 }] })).images);
    const onePlusOne = pixels(
      (await p.generate({ ...o, adapters: [{ lora, scale: 1 }, { lora, scale: 1 }] })).images,
    );
    assert(relativeError(two, plain) > 1e-2, "a LoRA at scale 2 should change the image");
    assert(relativeError(onePlusOne, two) < 2e-2, "two copies at scale 1 should equal one at scale 2");
    const late = pixels(
      (await p.generate({ ...o, adapters: [{ lora, scale: (s) => (s >= 2 ? 2 : 0) }] })).images,
    );
    assert(
      relativeError(late, two) > 1e-3 && relativeError(late, plain) > 1e-3,
      "a per-step scale is its own result",
    );
  });
});

Deno.test("bad requests fail before any work, naming the field; cancellation stops a run", async () => {
  await withPipeline(async (p) => {
    await assertRejects(
      () => p.generate({ prompt: "x", width: 50 }),
      RangeError,
      "width must be a multiple of 16",
    );
    await assertRejects(() => p.generate({ prompt: "x", steps: 0 }), RangeError, "steps must be");
    await assertRejects(() => p.generate({ prompt: "x", n: 99 }), RangeError, "n must be");
    await assertRejects(
      () => p.generate({ prompt: "x", guidanceRescale: 2 }),
      RangeError,
      "guidanceRescale must be in 0..1, got 2",
    );
    await assertRejects(
      () => p.generate({ prompt: "x", scheduler: "lms" as "ddim" }),
      RangeError,
      "Should be one of",
    );
    const ac = new AbortController();
    let seen = 0;
    await assertRejects(
      () =>
        p.generate({
          prompt: "x",
          steps: 10,
          signal: ac.signal,
          onStep: () => {
            if (++seen === 3) ac.abort();
          },
        }),
      DOMException,
      "canceled",
    );
    assertEquals(seen, 3);
  });
});

Deno.test("added tokens extend the embedding table: <new1> with the embedding of 'red' reads as 'red'", async () => {
  await withPipeline(async (p) => {
    const redId = p.folder.tokenizer.encode("red")[0];
    const [id] = p.addTokens([{ token: "<new1>", embedding: p.tokenEmbedding(redId) }]);
    assertEquals(id, p.folder.textConfig.vocab_size);
    const viaNew = await p.encodePrompt(["a <new1> circle"]);
    const viaRed = await p.encodePrompt(["a red circle"]);
    assertEquals(Array.from(viaNew.f), Array.from(viaRed.f));
    const blue = p.tokenEmbedding(p.folder.tokenizer.encode("blue")[0]);
    p.addTokens([{ token: "<new1>", embedding: blue }]);
    assert(
      relativeError((await p.encodePrompt(["a <new1> circle"])).f, viaRed.f) > 1e-3,
      "replaced embedding is used",
    );
    assertThrows(() => p.addTokens([{ token: "red", embedding: blue }]), RangeError, "base vocabulary");
  });
});
