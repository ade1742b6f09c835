/**
 * Concept Sliders over HTTP: a text slider trains (progress to done, a `slider` adapter with its prompts in
 * the file), a prediction applies two sliders and a DreamBooth LoRA at once, and bad slider inputs get
 * problem+json with `invalid_fields` (missing prompts, a pair whose images differ in size, a `sliders` id that
 * is not a slider) with nothing charged.
 */
import { assert, assertEquals } from "../gpu-worker/testing.ts";
import { decodeLora } from "../gpu-worker/adapters/lora.ts";
import { encodePng } from "../gpu-worker/image/png.ts";
import { renderScene } from "../gpu-worker/shapesworld/render.ts";
import { sampleScene } from "../gpu-worker/shapesworld/world.ts";
import { Rng } from "../gpu-worker/random.ts";
import { zipSync } from "fflate";
import { objectPng, starPng, startE2E } from "./e2e_server.ts";

const slider = (name: string, positive: string, negative: string) => ({
  method: "concept_slider",
  base_model: "tiny-shapes",
  destination: name,
  input: {
    target: "a red circle, white background",
    positive,
    negative,
    steps: 4,
    max_denoising_steps: 6,
    seed: 1,
  },
});

Deno.test("sliders end to end: train, apply two with a DreamBooth LoRA, refuse bad inputs", async (t) => {
  const e = await startE2E();
  try {
    const balance = async () => (await (await e.api("/v1/account")).json()).balance;
    let size = "", bright = "", star = "", imported = "";
    await t.step("two text sliders train to done; each is a slider adapter with its prompts", async () => {
      const a = await e.trainToDone(
        slider("size", "a large red circle, white background", "a small red circle, white background"),
      );
      size = (a.output as { adapter: string }).adapter;
      const b = await e.trainToDone(
        slider("dark", "a red circle, black background", "a red circle, white background"),
      );
      bright = (b.output as { adapter: string }).adapter;
      const rec = await (await e.api(`/v1/adapters/${size}`)).json();
      assertEquals(rec.kind, "slider", JSON.stringify(rec));
      const lora = decodeLora(
        new Uint8Array(await (await e.api(`/v1/adapters/${size}/weights`)).arrayBuffer()),
        "s",
      );
      assertEquals([lora.rank, lora.info?.positive, lora.info?.train_method], [
        4,
        "a large red circle, white background",
        "noxattn",
      ]);
      const kohya = await e.api(`/v1/adapters/${size}/weights?format=kohya`);
      assertEquals(kohya.status, 200);
      const kohyaBytes = new Uint8Array(await kohya.arrayBuffer());
      assert(decodeLora(kohyaBytes, "k").modules.size === lora.modules.size);
      // A slider file in the sliders repo's (kohya/LECO) keys imports as a slider.
      const file = await (await e.upload(kohyaBytes, "leco.safetensors")).json();
      const res = await e.json("/v1/adapters", {
        file: file.id,
        base_model: "tiny-shapes",
        name: "leco",
        method: "concept_slider",
      });
      const rec2 = await res.json();
      assertEquals([res.status, rec2.kind], [201, "slider"], JSON.stringify(rec2));
      imported = rec2.id;
    });

    await t.step("a DreamBooth LoRA to apply beside them", async () => {
      const up = await e.upload(starPng(0), "star.png");
      const img = (await up.json()).id;
      const d = await e.trainToDone({
        method: "dreambooth",
        base_model: "tiny-shapes",
        destination: "star",
        input: { images: [img], steps: 2, rank: 2, class_word: "star", with_prior_preservation: false },
      });
      star = (d.output as { adapter: string }).adapter;
    });

    await t.step(
      "a prediction with three sliders (one imported in kohya keys) and the DreamBooth LoRA",
      async () => {
        const res = await e.json(
          "/v1/predictions",
          {
            base_model: "tiny-shapes",
            input: {
              prompt: "a red circle, white background",
              steps: 4,
              seed: 2,
              adapters: [{ id: star, scale: 0.5 }],
              sliders: [{ id: size, scale: 2 }, { id: bright, scale: -1, start_step: 700 }, {
                id: imported,
                scale: 1,
              }],
            },
          },
          undefined,
          { prefer: "wait=60" },
        );
        const p = await res.json();
        assertEquals([res.status, p.status], [201, "succeeded"], JSON.stringify(p));
      },
    );

    await t.step("a visual slider from one zip of low/high and verylow/veryhigh folders trains", async () => {
      const scene = (seed: number, k: number) => {
        const img = renderScene(sampleScene(new Rng(seed), { objectCount: 1 }));
        return encodePng({ ...img, rgb: img.rgb.map((v) => k < 0 ? v * (1 + k) : v + (255 - v) * k) });
      };
      const tree: Record<string, Uint8Array> = {};
      for (const seed of [1, 2]) {
        for (
          const [folder, k] of [["verylow", -0.5], ["low", -0.25], ["high", 0.25], ["veryhigh", 0.5]] as const
        ) {
          tree[`bright/${folder}/scene${seed}.png`] = scene(seed, k);
        }
      }
      const zip = (await (await e.upload(zipSync(tree), "bright.zip")).json()).id;
      const done = await e.trainToDone({
        method: "concept_slider",
        base_model: "tiny-shapes",
        destination: "bright-visual",
        input: { kind: "visual", images: zip, steps: 2 },
      });
      assertEquals((done.metrics as { pairs: number }).pairs, 4, JSON.stringify(done));
      const rec = await (await e.api(`/v1/adapters/${(done.output as { adapter: string }).adapter}`)).json();
      assertEquals(rec.kind, "slider");
      // An image with no counterpart is named, and nothing is queued.
      delete tree["bright/high/scene2.png"];
      const unpaired = (await (await e.upload(zipSync(tree), "unpaired.zip")).json()).id;
      const res = await e.json("/v1/trainings", {
        method: "concept_slider",
        base_model: "tiny-shapes",
        destination: "bad-visual",
        input: { kind: "visual", images: unpaired, steps: 2 },
      });
      const p = await res.json();
      assertEquals([res.status, p.invalid_fields?.[0]?.name], [422, "input.images"], JSON.stringify(p));
      assert(p.detail.includes("low/scene2.png has no high/scene2.*"), p.detail);
    });

    await t.step("bad slider inputs: problem+json with invalid_fields, nothing charged", async () => {
      const before = await balance();
      const noPrompt = await e.json("/v1/trainings", {
        ...slider("x", "", ""),
        input: { target: "a red circle", steps: 4 },
      });
      const a = await noPrompt.json();
      assertEquals([noPrompt.status, noPrompt.headers.get("content-type")], [
        422,
        "application/problem+json",
      ]);
      assert(a.invalid_fields?.length, JSON.stringify(a));
      const small = await (await e.upload(objectPng(1, "circle", "red", "plain"), "a.png")).json();
      const bigPng = encodePng({ width: 32, height: 32, rgb: new Uint8Array(32 * 32 * 3).fill(200) });
      const other = await (await e.upload(bigPng, "b.png")).json();
      const mismatched = await e.json("/v1/trainings", {
        method: "concept_slider",
        base_model: "tiny-shapes",
        destination: "v",
        input: { kind: "visual", pairs: [{ low: small.id, high: other.id, scale: 1 }], steps: 4 },
      });
      const m = await mismatched.json();
      assertEquals(mismatched.status, 422, JSON.stringify(m));
      assertEquals(m.invalid_fields[0].name, "input.pairs.0");
      const notSlider = await e.json("/v1/predictions", {
        base_model: "tiny-shapes",
        input: { prompt: "a red circle", steps: 2, sliders: [{ id: star, scale: 1 }] },
      });
      const n = await notSlider.json();
      assertEquals(notSlider.status, 422, JSON.stringify(n));
      assertEquals(n.invalid_fields[0].name, "input.sliders.0.id");
      assertEquals(await balance(), before, "nothing charged");
    });
  } finally {
    await e.stop();
  }
});
