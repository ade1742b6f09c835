/**
 * End to end over real HTTP, the way a user personalizes a model: upload photos (single images and a zip with
 * a caption), start a DreamBooth training of a few steps with a webhook, follow its event stream to `done`,
 * download the adapter, generate with it and download the PNG. Along the way: the webhook's Standard Webhooks
 * signature verifies with the published secret, and another tenant gets 404 for every object.
 */
import { assert, assertEquals } from "../gpu-worker/testing.ts";
import { decodePng } from "../gpu-worker/image/png.ts";
import { decodeLora } from "../gpu-worker/adapters/lora.ts";
import { zipSync } from "fflate";
import { starPng, startE2E } from "./e2e_server.ts";

interface Delivery {
  headers: Headers;
  body: string;
}

/** A local webhook receiver (private addresses are allowed for this edge). */
function webhookReceiver() {
  const deliveries: Delivery[] = [];
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, async (req) => {
    deliveries.push({ headers: req.headers, body: await req.text() });
    return new Response(null, { status: 204 });
  });
  return { url: `http://127.0.0.1:${server.addr.port}/hook`, deliveries, close: () => server.shutdown() };
}

/** Standard Webhooks, written from the spec (not the edge's code): v1,base64(HMAC-SHA256(key, id.ts.body)). */
async function standardWebhookSignature(secret: string, id: string, timestamp: string, body: string) {
  const raw = Uint8Array.from(atob(secret.replace(/^whsec_/, "")), (c) => c.charCodeAt(0));
  const key = await crypto.subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const mac = new Uint8Array(
    await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(`${id}.${timestamp}.${body}`)),
  );
  return `v1,${btoa(String.fromCharCode(...mac))}`;
}

Deno.test("personalize end to end: upload, train with a webhook, stream to done, generate with the adapter", async (t) => {
  const e = await startE2E();
  const hooks = webhookReceiver();
  try {
    const ids: string[] = [];
    await t.step("upload two images and a zip of one image with its caption", async () => {
      for (const seed of [0, 1]) {
        const res = await e.upload(starPng(seed), `star${seed}.png`);
        assertEquals(res.status, 201, await res.clone().text());
        const file = await res.json();
        assertEquals([file.kind, file.width, file.height], ["image", 64, 64]);
        ids.push(file.id);
      }
      const zip = zipSync({
        "c.png": starPng(2),
        "c.txt": new TextEncoder().encode("a sks star, checkered"),
      });
      const res = await e.upload(zip, "more.zip");
      assertEquals(res.status, 201, await res.clone().text());
      const file = await res.json();
      assertEquals([file.kind, file.entries.map((x: { caption?: string }) => x.caption)], [
        "zip",
        ["a sks star, checkered"],
      ]);
      ids.push(file.id);
    });

    let training: Record<string, unknown> = {};
    await t.step("a DreamBooth training streams progress to done and makes an adapter", async () => {
      const res = await e.json("/v1/trainings", {
        method: "dreambooth",
        base_model: "tiny-shapes",
        destination: "star",
        input: { images: ids, steps: 6, rank: 2, learning_rate: 1e-3, seed: 1, class_word: "star" },
        webhook: hooks.url,
        webhook_events_filter: ["completed"],
      });
      assertEquals(res.status, 201, await res.clone().text());
      training = await res.json();
      const events = await e.stream((training.urls as { stream: string }).stream);
      const names = events.map((x) => x.event);
      assertEquals(names.at(-1), "done", names.join(","));
      assertEquals(events.at(-1)!.data, { status: "succeeded" });
      const progress = events.filter((x) => x.event === "progress").map((x) =>
        x.data as { step: number; total: number; loss?: number }
      );
      assert(progress.length >= 1 && progress.every((p) => p.total === 6), JSON.stringify(progress));
      assert(progress.some((p) => typeof p.loss === "number"), "training progress carries the loss");
      assert(events.some((x) => x.event === "output"), names.join(","));
      training = await (await e.api(`/v1/trainings/${training.id}`)).json();
      assertEquals(training.status, "succeeded", String(training.error));
      const metrics = training.metrics as Record<string, number>;
      assertEquals([metrics.steps_run, metrics.resumed_from_step], [6, 0]);
      assert(
        String(training.logs).includes("training a rank-2 LoRA on 3 image(s) (1 captioned)"),
        String(training.logs),
      );
    });

    const adapter = (training.output as { adapter: string }).adapter;
    await t.step("the adapter's weights download as a rank-2 LoRA", async () => {
      const res = await e.api(`/v1/adapters/${adapter}/weights`);
      assertEquals(res.status, 200);
      const lora = decodeLora(new Uint8Array(await res.arrayBuffer()), "star.safetensors");
      assertEquals([lora.rank, lora.info?.prompt], [2, "a sks star"]);
    });

    let prediction: Record<string, unknown> = {};
    await t.step("a prediction with the adapter answers with a 64x64 PNG", async () => {
      const res = await e.json(
        "/v1/predictions",
        {
          base_model: "tiny-shapes",
          input: { prompt: "a sks star", steps: 4, seed: 3, adapters: [{ id: adapter, scale: 1 }] },
        },
        undefined,
        { prefer: "wait=60" },
      );
      assertEquals(res.status, 201, await res.clone().text());
      prediction = await res.json();
      assertEquals(prediction.status, "succeeded", String(prediction.error));
      assertEquals((prediction.adapters as { id: string }[]).map((a) => a.id), [adapter]);
      const [url] = prediction.output as string[];
      const png = await e.api(new URL(url).pathname);
      assertEquals(png.status, 200);
      const img = decodePng(new Uint8Array(await png.arrayBuffer()));
      assertEquals([img.width, img.height], [64, 64]);
    });

    await t.step("the completed webhook is signed with the published secret", async () => {
      const { key } = await (await e.api("/v1/webhooks/default/secret")).json();
      assert(key.startsWith("whsec_"), key);
      const end = Date.now() + 10_000;
      while (!hooks.deliveries.length && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
      const d = hooks.deliveries[0];
      assert(d, "a webhook arrived");
      const [id, ts, sig] = ["webhook-id", "webhook-timestamp", "webhook-signature"].map((h) =>
        d.headers.get(h)!
      );
      assertEquals(sig, await standardWebhookSignature(key, id, ts, d.body));
      assert(Math.abs(Date.now() / 1000 - Number(ts)) < 300, "a fresh timestamp");
      const body = JSON.parse(d.body);
      assertEquals([body.id, body.status], [training.id, "succeeded"]);
    });

    await t.step("another tenant gets 404 for each of these objects", async () => {
      const paths = [
        `/v1/trainings/${training.id}`,
        `/v1/trainings/${training.id}/stream`,
        `/v1/adapters/${adapter}`,
        `/v1/adapters/${adapter}/weights`,
        `/v1/predictions/${prediction.id}`,
        `/v1/files/${ids[0]}`,
        `/v1/files/${ids[0]}/content`,
        new URL((prediction.output as string[])[0]).pathname,
      ];
      for (const path of paths) {
        const res = await e.api(path, {}, e.keyB);
        const body = await res.text();
        assertEquals(
          [res.status, res.headers.get("content-type")],
          [404, "application/problem+json"],
          `${path}: ${body}`,
        );
      }
      const cancel = await e.json(`/v1/trainings/${training.id}/cancel`, {}, e.keyB);
      assertEquals(cancel.status, 404, await cancel.text());
      const theirs = await e.json("/v1/predictions", {
        base_model: "tiny-shapes",
        input: { prompt: "a star", steps: 2, adapters: [{ id: adapter }] },
      }, e.keyB);
      assertEquals(theirs.status, 422, "another tenant's adapter is an unknown reference");
      const detail = await theirs.text();
      assert(detail.includes(`no adapter \\"${adapter}\\"`), detail);
    });
  } finally {
    await hooks.close();
    await e.stop();
  }
});
