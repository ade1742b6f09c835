/**
 * The OpenAI-compatible image routes through OpenAI's official `openai` client pointed at the local server:
 * generations (both response formats, a `base:adapter@scale` model), edits (img2img; a mask is refused with
 * 501), variations (501 until a worker serves Prompt-Free), and the client's errors for a bad size, an unknown
 * model, a tenant with no credits (402) and a rate limit (429, with Retry-After), each in OpenAI's error shape.
 */
import OpenAI, { toFile } from "openai";
import { encode } from "fast-png";
import { assert, assertEquals } from "../gpu-worker/testing.ts";
import { decodePng } from "../gpu-worker/image/png.ts";
import { testEdge } from "../edge/testing.ts";
import { starPng, startE2E } from "./e2e_server.ts";

/** The tiny model's size (OpenAI's types list only its own sizes). */
const SIZE = "64x64" as "256x256";
const client = (url: string, apiKey: string) => new OpenAI({ baseURL: `${url}/v1`, apiKey, maxRetries: 0 });

/** The client's error for a call that must fail. */
async function failure(p: Promise<unknown>): Promise<InstanceType<typeof OpenAI.APIError>> {
  try {
    await p;
  } catch (e) {
    if (e instanceof OpenAI.APIError) return e;
    throw e;
  }
  throw new Error("the call succeeded");
}

const pngOf = (b64: string) => decodePng(Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0)));

Deno.test({
  name: "OpenAI client: generations, edits, variations and errors against the local server",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async (t) => {
    const e = await startE2E();
    const ai = client(e.url, e.keyA);
    try {
      await t.step("generations: b64_json and url", async () => {
        const r = await ai.images.generate({
          model: "tiny-shapes",
          prompt: "a red circle, white background",
          n: 2,
          size: SIZE,
          response_format: "b64_json",
          quality: "hd",
          // deno-lint-ignore no-explicit-any
          ...({ steps: 4, seed: 3 } as any),
        });
        assertEquals(r.data?.length, 2);
        const img = pngOf(r.data![0].b64_json!);
        assertEquals([img.width, img.height], [64, 64]);
        assert(typeof r.created === "number" && r.created > 1_600_000_000, String(r.created));
        const u = await ai.images.generate({ model: "tiny-shapes", prompt: "a blue square", size: SIZE });
        const url = u.data![0].url!;
        assert(url.startsWith(`${e.url}/v1/files/`), url);
        const res = await e.api(new URL(url).pathname);
        assertEquals(res.status, 200);
        assertEquals(decodePng(new Uint8Array(await res.arrayBuffer())).width, 64);
      });

      await t.step(
        "generations with base:adapter@scale; unknown models and bad sizes are refused",
        async () => {
          const up = await (await e.upload(starPng(0), "star.png")).json();
          await e.trainToDone({
            method: "dreambooth",
            base_model: "tiny-shapes",
            destination: "star",
            input: { images: [up.id], steps: 2, rank: 2, class_word: "star", with_prior_preservation: false },
          });
          const r = await ai.images.generate({
            model: "tiny-shapes:star@0.7",
            prompt: "a sks star",
            response_format: "b64_json",
          });
          assertEquals(r.data?.length, 1);
          const preds = (await (await e.api("/v1/predictions")).json()).data as {
            input: { adapters: { scale: number }[] };
          }[];
          assert(preds.some((p) => p.input.adapters[0]?.scale === 0.7), "the adapter went in at 0.7");
          const noModel = await failure(ai.images.generate({ model: "dall-e-3", prompt: "x" }));
          assertEquals([noModel.status, noModel.param, noModel.code], [404, "model", "model_not_found"]);
          assert(noModel.message.includes("tiny-shapes"), noModel.message);
          const noAdapter = await failure(ai.images.generate({ model: "tiny-shapes:nope", prompt: "x" }));
          assertEquals([noAdapter.status, noAdapter.param], [404, "model"]);
          const badSize = await failure(
            ai.images.generate({ model: "tiny-shapes", prompt: "x", size: "big" as "256x256" }),
          );
          assertEquals([badSize.status, badSize.param, badSize.type], [422, "size", "invalid_request_error"]);
          const tooMany = await failure(ai.images.generate({ model: "tiny-shapes", prompt: "x", n: 11 }));
          assertEquals([tooMany.status, tooMany.param], [422, "n"]);
        },
      );

      await t.step(
        "edits: img2img from an uploaded image; inpainting with a mask keeps its opaque part",
        async () => {
          const image = await toFile(starPng(1), "star.png", { type: "image/png" });
          const r = await ai.images.edit({
            model: "tiny-shapes",
            image,
            prompt: "a purple star, white background",
            response_format: "b64_json",
          });
          assertEquals(pngOf(r.data![0].b64_json!).width, 64);
          // OpenAI's mask: transparent where the image is edited (here the right half), opaque elsewhere.
          const maskPng = (w: number, h: number) => {
            const data = new Uint8Array(w * h * 4);
            for (let p = 0; p < w * h; p++) data[p * 4 + 3] = p % w >= w / 2 ? 0 : 255;
            return encode({ width: w, height: h, data, channels: 4, depth: 8 });
          };
          const masked = await ai.images.edit({
            model: "tiny-shapes",
            image: await toFile(starPng(1), "star.png", { type: "image/png" }),
            mask: await toFile(maskPng(64, 64), "mask.png", { type: "image/png" }),
            prompt: "a large plain yellow circle in the center, white background",
            response_format: "b64_json",
          });
          const out = pngOf(masked.data![0].b64_json!), src = decodePng(starPng(1));
          let keptDiff = 0, repaintedDiff = 0;
          for (let p = 0; p < 64 * 64; p++) {
            const d = Math.abs(out.rgb[p * 3] - src.rgb[p * 3]) +
              Math.abs(out.rgb[p * 3 + 2] - src.rgb[p * 3 + 2]);
            if (p % 64 < 32) keptDiff += d;
            else repaintedDiff += d;
          }
          assertEquals(keptDiff, 0, "inpainting keeps the opaque half's pixels");
          assert(repaintedDiff > 0, "inpainting repaints the transparent half");
          const wrongSize = await failure(ai.images.edit({
            model: "tiny-shapes",
            image: await toFile(starPng(1), "star.png", { type: "image/png" }),
            mask: await toFile(maskPng(32, 32), "mask.png", { type: "image/png" }),
            prompt: "x",
          }));
          assertEquals([wrongSize.status, wrongSize.param], [422, "mask"]);
          assert(
            wrongSize.message.includes("the mask is 32x32, expected the image's size 64x64"),
            wrongSize.message,
          );
          const notImage = await failure(ai.images.edit({
            model: "tiny-shapes",
            image: await toFile(new TextEncoder().encode("hello"), "a.png", { type: "image/png" }),
            prompt: "x",
          }));
          assertEquals(notImage.status, 415);
        },
      );

      await t.step(
        "variations: 501 naming what is missing while no worker serves reference_image",
        async () => {
          const served = (await (await e.api("/v1/models")).json()).data.find((m: { id: string }) =>
            m.id === "tiny-shapes"
          );
          const v = ai.images.createVariation({
            model: "tiny-shapes",
            image: await toFile(starPng(1), "star.png", { type: "image/png" }),
            response_format: "b64_json",
          });
          if (served.capabilities?.includes("reference_image")) {
            assertEquals(pngOf((await v).data![0].b64_json!).width, 64);
          } else {
            const err = await failure(v);
            assertEquals([err.status, err.code], [501, "not_implemented"]);
            assert(err.message.includes("reference_image"), err.message);
          }
        },
      );

      await t.step("402: a tenant without credits, nothing created", async () => {
        const key = await e.tenant("poor", 0);
        const poor = client(e.url, key);
        const err = await failure(poor.images.generate({ model: "tiny-shapes", prompt: "a red circle" }));
        assertEquals([err.status, err.type, err.code], [402, "insufficient_quota", "insufficient_credits"]);
        assertEquals((await (await e.api("/v1/predictions", {}, key)).json()).data, []);
      });

      await t.step("Idempotency-Key: the same request replays the first answer, charged once", async () => {
        const balance = async () => (await (await e.api("/v1/account")).json()).balance;
        const before = await balance();
        const body = { model: "tiny-shapes", prompt: "a green ring", response_format: "b64_json", steps: 2 };
        const send = () =>
          e.json("/v1/images/generations", body, undefined, { "Idempotency-Key": "openai-1" });
        const [a, b] = [await send(), await send()];
        assertEquals([a.status, b.status, b.headers.get("idempotent-replayed")], [200, 200, "true"]);
        assertEquals(await a.text(), await b.text());
        assertEquals(before - (await balance()), 2, "one image x 2 steps, once");
      });
    } finally {
      await e.stop();
    }
  },
});

Deno.test("OpenAI client: 429 with Retry-After in OpenAI's shape once the key's rate is spent", async () => {
  const t = await testEdge({ rateLimit: { limit: 1, windowMs: 60_000 } });
  const server = Deno.serve({ port: 0, onListen: () => {} }, (req) => t.app.fetch(req));
  try {
    const ai = client(`http://127.0.0.1:${server.addr.port}`, t.keyA);
    await failure(ai.images.generate({ model: "tiny-shapes", prompt: "x", size: "1x" as "256x256" }));
    const err = await failure(ai.images.generate({ model: "tiny-shapes", prompt: "x" }));
    assertEquals([err.status, err.type, err.code], [429, "rate_limit_error", "rate_limited"]);
    assert(Number(err.headers?.get("retry-after")) > 0, "Retry-After");
  } finally {
    await server.shutdown();
  }
});
