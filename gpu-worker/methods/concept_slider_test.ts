/**
 * Concept Sliders' training runs at toy size on the tiny model: the file (diffusers keys, the slider's prompts
 * in the metadata), the train method's modules (conv factors for c3lier), determinism by seed, visual pairs,
 * checkpoints, and the input errors.
 */
import { assert, assertEquals, assertRejects } from "../testing.ts";
import { withRunner } from "../ort/test_scaffold.ts";
import { decodeLora } from "../adapters/lora.ts";
import { readSafetensors } from "../models/safetensors.ts";
import { renderScene } from "../shapesworld/render.ts";
import { sampleScene } from "../shapesworld/world.ts";
import { Rng } from "../random.ts";
import { JobInputError } from "../input_error.ts";
import { conceptSlider, withAttribute } from "./concept_slider.ts";

const TINY = new URL("../../models/tiny-shapes", import.meta.url).pathname;
const TEXT = {
  target: "a red circle, white background",
  positive: "a large red circle, white background",
  negative: "a small red circle, white background",
  steps: 3,
  max_denoising_steps: 4,
  seed: 5,
};

Deno.test("preservation attributes go where {} is, else in front", () => {
  assertEquals(withAttribute("a {}, white background", "red circle"), "a red circle, white background");
  assertEquals(withAttribute("a person", "male"), "male a person");
  assertEquals(withAttribute("a {} circle", null), "a circle");
});

Deno.test("a text slider trains: attn1 LoRA (noxattn), prompts in the metadata, same seed same bytes", async () => {
  await withRunner(async (runner) => {
    const run = async () => {
      const out = await Deno.makeTempDir();
      const r = await conceptSlider(runner, { model: TINY, out, config: TEXT, checkpointEvery: 2 });
      return { r, bytes: await Deno.readFile(r.file), out };
    };
    const a = await run();
    const lora = decodeLora(a.bytes, "slider");
    assertEquals([lora.rank, lora.alpha], [4, 1]);
    assert(
      [...lora.modules.keys()].every((p) =>
        p.endsWith(".to_q") || p.endsWith(".to_k") || p.endsWith(".to_v") || p.endsWith(".to_out.0")
      ),
    );
    assert([...lora.modules.keys()].every((p) => p.includes("attn1")), "noxattn: self-attention only");
    assertEquals([lora.info?.positive, lora.info?.train_method, lora.info?.kind], [
      TEXT.positive,
      "noxattn",
      "text",
    ]);
    assertEquals(a.r.losses.length, 3);
    assert(a.r.losses.every(Number.isFinite));
    assert([...Deno.readDirSync(`${a.out}/checkpoints`)].length > 0, "a checkpoint was written");
    const b = await run();
    assertEquals(b.bytes, a.bytes, "deterministic by seed");
  });
});

Deno.test("c3lier sliders carry conv factors, 4-D in the file; a visual slider trains from pairs", async () => {
  await withRunner(async (runner) => {
    const r = await conceptSlider(runner, {
      model: TINY,
      out: await Deno.makeTempDir(),
      config: { ...TEXT, steps: 1, train_method: "c3lier" },
    });
    const file = readSafetensors(await Deno.readFile(r.file), "c3lier");
    const conv = file.names().find((n) => n.includes("resnets.0.conv1") && n.endsWith("lora_A.weight"))!;
    assertEquals(file.entry(conv).shape.length, 4);
    const rng = new Rng(1);
    const pairs = [0, 1].map(() => {
      const img = renderScene(sampleScene(rng, { objectCount: 1 }));
      return { low: { ...img, rgb: img.rgb.map((v) => v >> 1) }, high: img, scale: 1 };
    });
    const v = await conceptSlider(runner, {
      model: TINY,
      out: await Deno.makeTempDir(),
      config: { kind: "visual", steps: 2, seed: 1 },
      pairs,
    });
    assertEquals(decodeLora(await Deno.readFile(v.file), "v").info?.kind, "visual");
  });
});

Deno.test("slider input errors say what is wrong before training", async () => {
  await withRunner(async (runner) => {
    const out = await Deno.makeTempDir();
    await assertRejects(
      () => conceptSlider(runner, { model: TINY, out, config: { target: "a circle" } }),
      JobInputError,
      "a text slider needs positive",
    );
    await assertRejects(
      () => conceptSlider(runner, { model: TINY, out, config: { kind: "visual" } }),
      JobInputError,
      "a visual slider needs at least one image pair",
    );
    const img = renderScene(sampleScene(new Rng(2), { objectCount: 1 }));
    const small = { width: 32, height: 32, rgb: new Uint8Array(32 * 32 * 3) };
    await assertRejects(
      () =>
        conceptSlider(runner, {
          model: TINY,
          out,
          config: { kind: "visual", steps: 1 },
          pairs: [{ low: img, high: small, scale: 1 }],
        }),
      JobInputError,
      "pairs[0]: low is 64x64 but high is 32x32",
    );
  });
});
