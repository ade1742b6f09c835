/**
 * DreamBooth `mode: "full"` end to end over real HTTP: the training fine-tunes every UNet weight and stores the
 * whole UNet as one file (`unet.*` tensors); predictions that name it run on a model built from it (the same
 * pixels as a pipeline loaded locally from the downloaded file), by id or by its token in the prompt, with a
 * LoRA riding on top; the downloaded file imports back as a full model; the wrong uses (a scale other than 1,
 * two full models in one prediction, a PEFT download) are refused with the reason.
 */
import { assert, assertEquals } from "../gpu-worker/testing.ts";
import { decodePng } from "../gpu-worker/image/png.ts";
import { readSafetensors } from "../gpu-worker/models/safetensors.ts";
import { materializeFullCheckpoint } from "../gpu-worker/adapters/full_checkpoint.ts";
import { StableDiffusionPipeline } from "../gpu-worker/pipelines/stable_diffusion.ts";
import { withRunner, withTemp } from "../gpu-worker/ort/test_scaffold.ts";
import { MODELS, starPng, startE2E } from "./e2e_server.ts";

Deno.test("DreamBooth full fine-tune over HTTP: train, download, generate with the fine-tuned model", async (t) => {
  const e = await startE2E();
  try {
    const images: string[] = [];
    for (const seed of [0, 1, 2]) {
      const res = await e.upload(starPng(seed), `star${seed}.png`);
      assertEquals(res.status, 201, await res.clone().text());
      images.push((await res.json()).id);
    }
    const trainAndWait = (destination: string, input: Record<string, unknown>) =>
      e.trainToDone({
        method: "dreambooth",
        base_model: "tiny-shapes",
        destination,
        input: { images, seed: 1, with_prior_preservation: false, ...input },
      });

    let fullId = "";
    let checkpoint = new Uint8Array();
    await t.step("a full training streams progress and stores the whole UNet", async () => {
      const done = await trainAndWait("star-model", {
        mode: "full",
        class_word: "star",
        steps: 6,
        learning_rate: 1e-3,
      });
      assert(String(done.logs).includes("training every UNet weight"), String(done.logs));
      const m = done.metrics as Record<string, number>;
      assertEquals(m.steps_run, 6);
      fullId = (done.output as { adapter: string }).adapter;
      const rec = await (await e.api(`/v1/adapters/${fullId}`)).json();
      assertEquals([rec.method, rec.token, rec.class_word, rec.full_model], [
        "dreambooth",
        "sks",
        "star",
        true,
      ]);
      const res = await e.api(`/v1/adapters/${fullId}/weights`);
      assertEquals(res.status, 200);
      checkpoint = new Uint8Array(await res.arrayBuffer());
      assertEquals(m.weights_bytes, checkpoint.byteLength);
      const f = readSafetensors(checkpoint, "star-model");
      assertEquals(f.metadata.checkpoint, "full");
      assert(f.names().every((n) => n.startsWith("unet.")), f.names().find((n) => !n.startsWith("unet.")));
      assertEquals(JSON.parse(f.metadata.info).mode, "full");
      const peft = await e.api(`/v1/adapters/${fullId}/weights?format=peft`);
      assertEquals(peft.status, 422);
      assert((await peft.text()).includes("not a LoRA tensor"));
    });

    const predict = async (input: Record<string, unknown>) => {
      const res = await e.json("/v1/predictions", { base_model: "tiny-shapes", input }, undefined, {
        prefer: "wait=60",
      });
      assertEquals(res.status, 201, await res.clone().text());
      const p = await res.json();
      if (p.status !== "succeeded") return { p, img: null };
      const png = await e.api(new URL((p.output as string[])[0]).pathname);
      return { p, img: decodePng(new Uint8Array(await png.arrayBuffer())) };
    };
    const common = { steps: 4, seed: 3, guidance_scale: 5, scheduler: "ddim" };

    await t.step(
      "predictions run on the fine-tuned model: the pixels of the downloaded weights",
      async () => {
        const prompt = "a sks star, white background";
        const tuned = await predict({ prompt, ...common, adapters: [{ id: fullId }] });
        assertEquals(tuned.p.status, "succeeded", String(tuned.p.error));
        const base = await predict({ prompt: "a star, white background", ...common });
        assert(base.img!.rgb.some((v, i) => v !== tuned.img!.rgb[i]), "the fine-tune changes the image");
        // The same model, built here from the downloaded file: the same pixels.
        const local = await withTemp("full_e2e_", (dir) =>
          withRunner(async (runner) => {
            await materializeFullCheckpoint(readSafetensors(checkpoint, "dl"), `${MODELS}/tiny-shapes`, dir);
            const pipe = await StableDiffusionPipeline.load(dir, runner);
            try {
              return (await pipe.generate({ prompt, steps: 4, seed: 3, guidanceScale: 5, scheduler: "ddim" }))
                .images[0];
            } finally {
              await pipe.release();
            }
          }));
        assertEquals(local.rgb, tuned.img!.rgb);
        // The token in the prompt routes to the model too.
        const routed = await predict({ prompt, ...common });
        assertEquals((routed.p.adapters as { id: string }[]).map((a) => a.id), [fullId]);
        assertEquals(routed.img!.rgb, tuned.img!.rgb);
      },
    );

    await t.step(
      "a LoRA rides on the fine-tuned model; other scales are refused with the reason",
      async () => {
        const lora = await trainAndWait("star-lora", { token: "zwx", class_word: "star", steps: 2 });
        const loraId = (lora.output as { adapter: string }).adapter;
        const prompt = "a sks star";
        const alone = await predict({ prompt, ...common, adapters: [{ id: fullId }] });
        const both = await predict({
          prompt,
          ...common,
          adapters: [{ id: fullId }, { id: loraId, scale: 3 }],
        });
        assertEquals(both.p.status, "succeeded", String(both.p.error));
        assert(
          both.img!.rgb.some((v, i) => v !== alone.img!.rgb[i]),
          "the LoRA changes the fine-tuned model's image",
        );
        const half = await e.json("/v1/predictions", {
          base_model: "tiny-shapes",
          input: { prompt, ...common, adapters: [{ id: fullId, scale: 0.5 }] },
        });
        assertEquals(half.status, 422);
        const problem = await half.json();
        assertEquals(problem.invalid_fields[0].name, "input.adapters");
        assert(problem.detail.includes("applies at scale 1, got 0.5"), problem.detail);
      },
    );

    await t.step("the downloaded file imports back as a full model and serves the same pixels", async () => {
      const up = await e.upload(checkpoint, "star-model.safetensors");
      assertEquals(up.status, 201, await up.clone().text());
      const res = await e.json("/v1/adapters", {
        file: (await up.json()).id,
        base_model: "tiny-shapes",
        name: "star-model-copy",
        method: "dreambooth",
      });
      assertEquals(res.status, 201, await res.clone().text());
      const rec = await res.json();
      // Token and class word come from the file's own record of its training.
      assertEquals([rec.full_model, rec.token, rec.class_word], [true, "sks", "star"]);
      const prompt = "a sks star, white background";
      const a = await predict({ prompt, ...common, adapters: [{ id: fullId }] });
      const b = await predict({ prompt, ...common, adapters: [{ id: rec.id }] });
      assertEquals(b.img!.rgb, a.img!.rgb);
      const two = await e.json("/v1/predictions", {
        base_model: "tiny-shapes",
        input: { prompt, ...common, adapters: [{ id: fullId }, { id: rec.id }] },
      });
      assertEquals(two.status, 422);
      assert((await two.text()).includes("at most one"));
    });
  } finally {
    await e.stop();
  }
});
