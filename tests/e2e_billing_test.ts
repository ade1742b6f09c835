/**
 * End to end over real HTTP, the refusals and the money: bad uploads are refused with problem+json and
 * nothing stored; the same Idempotency-Key twice makes one job and one charge; a tenant short of credits gets
 * 402 and no job is created; a running prediction that is canceled stops on its worker and is refunded.
 */
import { assert, assertEquals } from "../gpu-worker/testing.ts";
import { starPng, startE2E } from "./e2e_server.ts";

/** A WebP that declares a 64x64 canvas (VP8X) but holds no image data: recognized, undecodable (400). */
function webpWithoutImage(): Uint8Array {
  const b = new Uint8Array(40);
  b.set(new TextEncoder().encode("RIFF"), 0);
  new DataView(b.buffer).setUint32(4, b.length - 8, true);
  b.set(new TextEncoder().encode("WEBPVP8X"), 8);
  b.set([63, 0, 0, 63, 0, 0], 24);
  return b;
}

Deno.test("uploads, idempotency and credits end to end", async (t) => {
  const e = await startE2E();
  try {
    await t.step("bad uploads are refused with problem+json and nothing is stored", async () => {
      const png = starPng(0);
      const cases: [string, Uint8Array, string, number][] = [
        ["not an image", new TextEncoder().encode("hello, not a picture"), "notes.png", 415],
        ["a truncated PNG", png.subarray(0, 60), "cut.png", 400],
        ["a WebP without image data", webpWithoutImage(), "x.webp", 400],
        ["a fake safetensors", new TextEncoder().encode("not safetensors at all"), "lora.safetensors", 400],
      ];
      for (const [what, bytes, name, status] of cases) {
        const res = await e.upload(bytes, name);
        const body = await res.text();
        assertEquals(
          [res.status, res.headers.get("content-type")],
          [status, "application/problem+json"],
          `${what}: ${body}`,
        );
        assert(JSON.parse(body).detail, `${what}: a detail says why`);
      }
      const json = await e.json("/v1/files", { content: "x" });
      assertEquals(json.status, 415, "multipart/form-data is required");
      await json.body?.cancel();
      const files = await (await e.api("/v1/files")).json();
      assertEquals(files.data, [], "no file was stored");
    });

    await t.step("the same Idempotency-Key twice: one job, one charge", async () => {
      const before = (await (await e.api("/v1/account")).json()).balance;
      const request = { base_model: "tiny-shapes", input: { prompt: "a red circle", steps: 3, seed: 5 } };
      const headers = { "idempotency-key": "e2e-once", prefer: "wait=60" };
      const first = await e.json("/v1/predictions", request, undefined, headers);
      assertEquals(first.status, 201, await first.clone().text());
      const a = await first.json();
      assertEquals(a.status, "succeeded", a.error);
      const second = await e.json("/v1/predictions", request, undefined, headers);
      assertEquals([second.status, second.headers.get("idempotent-replayed")], [201, "true"]);
      const b = await second.json();
      assertEquals(b.id, a.id);
      const list = await (await e.api("/v1/predictions")).json();
      assertEquals(list.data.map((p: { id: string }) => p.id), [a.id], "one job");
      const after = (await (await e.api("/v1/account")).json()).balance;
      assertEquals(before - after, 3, "charged num_outputs x steps once");
      const usage = await (await e.api("/v1/usage")).json();
      const mine = usage.data.filter((x: { job_id: string }) => x.job_id === a.id).map((
        x: { kind: string },
      ) => x.kind);
      assertEquals(mine.sort(), ["reserve", "settle"]);
      const other = await e.json(
        "/v1/predictions",
        { ...request, input: { ...request.input, seed: 6 } },
        undefined,
        headers,
      );
      assertEquals(other.status, 422, "the same key with other parameters");
      await other.body?.cancel();
    });

    await t.step("insufficient credits: 402 problem+json, no job, the balance untouched", async () => {
      const poor = await e.tenant("poor", 5);
      const res = await e.json("/v1/predictions", {
        base_model: "tiny-shapes",
        input: { prompt: "a red circle", steps: 10 },
      }, poor);
      const body = await res.json();
      assertEquals([res.status, body.status], [402, 402], JSON.stringify(body));
      assert(body.detail.includes("costs 10 credits; the balance is 5"), body.detail);
      const image = await (await e.upload(starPng(1), "star.png", poor)).json();
      const training = await e.json("/v1/trainings", {
        method: "dreambooth",
        base_model: "tiny-shapes",
        destination: "x",
        input: { images: [image.id], steps: 1 },
      }, poor);
      assertEquals(training.status, 402, await training.text());
      assertEquals((await (await e.api("/v1/predictions", {}, poor)).json()).data, [], "no prediction");
      assertEquals((await (await e.api("/v1/trainings", {}, poor)).json()).data, [], "no training");
      assertEquals((await (await e.api("/v1/account", {}, poor)).json()).balance, 5);
    });

    await t.step("canceling a running prediction stops the worker's job and refunds it", async () => {
      const before = (await (await e.api("/v1/account")).json()).balance;
      const res = await e.json("/v1/predictions", {
        base_model: "tiny-shapes",
        input: { prompt: "a blue square", steps: 500, seed: 1 },
      });
      const p = await res.json();
      const streamed = e.stream(p.urls.stream);
      await e.poll(
        `/v1/predictions/${p.id}`,
        (x) => x.status === "processing" && String(x.logs).includes("attempt 1"),
      );
      const cancel = await e.json(`/v1/predictions/${p.id}/cancel`, {});
      assertEquals(cancel.status, 200, await cancel.text());
      const events = await streamed;
      assertEquals(events.at(-1), { event: "done", data: { status: "canceled" } });
      const previews = events.filter((x) => x.event === "preview").map((x) => x.data as { png: string });
      assert(previews.length >= 1 && previews[0].png.length > 100, "previews streamed while it ran");
      const progress = events.filter((x) => x.event === "progress").map((x) =>
        (x.data as { step: number }).step
      );
      assert(progress.length >= 1 && progress.at(-1)! < 500, `stopped early: ${progress}`);
      const final = await (await e.api(`/v1/predictions/${p.id}`)).json();
      assertEquals([final.status, final.output], ["canceled", null]);
      assertEquals((await (await e.api("/v1/account")).json()).balance, before, "refunded");
      const usage = await (await e.api("/v1/usage")).json();
      const mine = usage.data.filter((x: { job_id: string }) => x.job_id === p.id).map((
        x: { kind: string },
      ) => x.kind);
      assertEquals(mine.sort(), ["refund", "reserve"]);
    });
  } finally {
    await e.stop();
  }
});
