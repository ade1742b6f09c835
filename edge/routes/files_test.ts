import { zipSync } from "fflate";
import { decode } from "fast-png";
import jpeg from "jpeg-js";
import { assert, assertEquals } from "../../gpu-worker/testing.ts";
import { writeSafetensors } from "../../gpu-worker/models/safetensors.ts";
import { sha256Hex } from "../../shared/blob_store.ts";
import { testEdge, testPng, uploadForm } from "../testing.ts";

async function upload(
  t: Awaited<ReturnType<typeof testEdge>>,
  bytes: Uint8Array,
  name: string,
  key = t.keyA,
) {
  return await t.req("/v1/files", {
    method: "POST",
    body: uploadForm(bytes, name, { metadata: '{"set":"rex"}' }),
  }, key);
}

/** A PNG whose header claims `w x h` pixels, with a few bytes of data: a decompression bomb's shape. */
function pixelBomb(w: number, h: number): Uint8Array {
  const chunk = (type: string, data: number[]) => {
    const len = [24, 16, 8, 0].map((s) => (data.length >>> s) & 255);
    return [...len, ...new TextEncoder().encode(type), ...data, 0, 0, 0, 0];
  };
  const be = (n: number) => [24, 16, 8, 0].map((s) => (n >>> s) & 255);
  return new Uint8Array([
    0x89,
    0x50,
    0x4e,
    0x47,
    0x0d,
    0x0a,
    0x1a,
    0x0a,
    ...chunk("IHDR", [...be(w), ...be(h), 8, 2, 0, 0, 0]),
    ...chunk("IDAT", [0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]),
    ...chunk("IEND", []),
  ]);
}

Deno.test("upload: a PNG is validated, re-encoded and stored content-addressed", async () => {
  const t = await testEdge();
  const png = testPng(8, 6);
  const withTrailer = new Uint8Array([...png, ...new TextEncoder().encode("<script>payload</script>")]);
  const res = await upload(t, withTrailer, "photo.png");
  assertEquals(res.status, 201);
  const file = await res.json();
  assertEquals([file.kind, file.content_type, file.width, file.height, file.metadata], [
    "image",
    "image/png",
    8,
    6,
    { set: "rex" },
  ]);
  assert(file.id.startsWith("file_") && file.urls.content.endsWith(`/v1/files/${file.id}/content`));
  const content = await t.req(`/v1/files/${file.id}/content`);
  assertEquals(content.headers.get("content-type"), "image/png");
  const bytes = new Uint8Array(await content.arrayBuffer());
  assertEquals(file.checksums.sha256, await sha256Hex(bytes));
  assertEquals(file.size, bytes.byteLength);
  assert(!new TextDecoder().decode(bytes).includes("payload"), "the trailing payload is gone");
  assertEquals(decode(bytes).data, decode(png).data, "same pixels");
  assertEquals((await t.req(`/v1/files/${file.id}`)).status, 200);
});

Deno.test("upload: a JPEG is decoded and stored as PNG", async () => {
  const t = await testEdge();
  const raw = { width: 16, height: 8, data: new Uint8Array(16 * 8 * 4).fill(200) };
  const res = await upload(t, jpeg.encode(raw, 90).data, "photo.jpg");
  assertEquals(res.status, 201);
  const file = await res.json();
  assertEquals([file.content_type, file.width, file.height], ["image/png", 16, 8]);
});

Deno.test("upload: judged by magic bytes, not names: wrong magic is 415 problem+json", async () => {
  const t = await testEdge();
  const res = await upload(t, new TextEncoder().encode("GIF89a not really"), "cat.png");
  assertEquals(res.status, 415);
  assertEquals(res.headers.get("content-type"), "application/problem+json");
  const p = await res.json();
  assertEquals([p.status, p.invalid_fields[0].name], [415, "content"]);
  assert(
    p.type.endsWith("unsupported-media-type") && p.title && p.detail.includes("cat.png"),
    JSON.stringify(p),
  );
  const pickle = new Uint8Array([0x80, 0x02, 0x7d, 0x71, 0x00]);
  assertEquals((await upload(t, pickle, "model.bin")).status, 415);
});

Deno.test("upload: WebP is decoded and re-encoded as PNG; a broken WebP is 400", async () => {
  const t = await testEdge();
  // A 1x1 lossless WebP (libwebp's smallest test image).
  const good = Uint8Array.from(
    atob("UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA=="),
    (c) => c.charCodeAt(0),
  );
  const ok = await upload(t, good, "a.webp");
  assertEquals(ok.status, 201, await ok.clone().text());
  assertEquals((await ok.json()).content_type, "image/png");
  const webp = new Uint8Array(40);
  webp.set(new TextEncoder().encode("RIFF"), 0);
  webp.set(new TextEncoder().encode("WEBPVP8X"), 8);
  webp.set([7, 0, 0, 7, 0, 0], 24); // 8 x 8 canvas, no image data
  const res = await upload(t, webp, "a.webp");
  assertEquals(res.status, 400);
  assert((await res.json()).detail.includes("WebP"));
});

Deno.test("upload: too many bytes is 413 (limit counted on the streamed body)", async () => {
  const t = await testEdge({ uploadLimits: { maxBytes: 1000 } });
  const big = new Uint8Array(5000);
  big.set(testPng());
  const res = await upload(t, big, "big.png");
  assertEquals(res.status, 413);
  assertEquals((await res.json()).type, "/docs#problem-too-large");
  const stream = new ReadableStream({
    start(c) {
      for (let i = 0; i < 400; i++) c.enqueue(new Uint8Array(1024));
      c.close();
    },
  });
  const streamed = await t.req("/v1/files", {
    method: "POST",
    body: stream,
    headers: { "content-type": "multipart/form-data; boundary=x" },
  });
  assertEquals(streamed.status, 413);
});

Deno.test("upload: a pixel bomb is refused from its header, before decoding", async () => {
  const t = await testEdge();
  const bomb = pixelBomb(100_000, 100_000);
  assert(bomb.byteLength < 100);
  const res = await upload(t, bomb, "tiny.png");
  const p = await res.json();
  assertEquals([res.status, p.type], [413, "/docs#problem-too-many-pixels"]);
  assert(p.detail.includes("100000 x 100000") && p.detail.includes("not decoded"), p.detail);
});

Deno.test("upload: a zip of images with .txt captions; entries checked and the zip rebuilt", async () => {
  const t = await testEdge();
  const zip = zipSync({
    "rex/01.png": testPng(8, 8, 1),
    "rex/01.txt": new TextEncoder().encode("a photo of sks dog on grass\n"),
    "rex/02.jpg": jpeg.encode({ width: 8, height: 8, data: new Uint8Array(256).fill(90) }, 90).data,
    "__MACOSX/rex/._01.png": new Uint8Array([0, 5, 22, 7]),
    "rex/": new Uint8Array(),
  });
  const res = await upload(t, zip, "rex.zip");
  assertEquals(res.status, 201);
  const file = await res.json();
  assertEquals(file.kind, "zip");
  assertEquals(file.entries.map((e: { name: string; caption?: string }) => [e.name, e.caption ?? null]), [
    ["01.png", "a photo of sks dog on grass"],
    ["02.png", null],
  ]);
  const content = new Uint8Array(await (await t.req(`/v1/files/${file.id}/content`)).arrayBuffer());
  const { unzipSync } = await import("fflate");
  assertEquals(Object.keys(unzipSync(content)).sort(), ["01.png", "01.txt", "02.png"]);
});

Deno.test("upload: a zip keeps its sub-folders below one common top folder; unsafe paths are refused", async () => {
  const t = await testEdge();
  const zip = zipSync({
    "slider/low/a.png": testPng(8, 8, 1),
    "slider/high/a.png": testPng(8, 8, 2),
    "slider/high/a.txt": new TextEncoder().encode("brighter"),
  });
  const file = await (await upload(t, zip, "slider.zip")).json();
  assertEquals(file.entries.map((e: { name: string; caption?: string }) => [e.name, e.caption ?? null]), [
    ["high/a.png", "brighter"],
    ["low/a.png", null],
  ]);
  const evil = await upload(t, zipSync({ "../a.png": testPng(), "b.png": testPng() }), "evil.zip");
  assertEquals(evil.status, 400);
  assert((await evil.json()).detail.includes("relative"));
});

Deno.test("upload: zips are limited by entry count and checked entry by entry", async () => {
  const t = await testEdge({ uploadLimits: { maxZipEntries: 2 } });
  const three = zipSync({ "a.png": testPng(), "b.png": testPng(), "c.png": testPng() });
  assertEquals((await upload(t, three, "three.zip")).status, 413);
  const bad = zipSync({ "a.png": testPng(), "evil.exe": new Uint8Array([0x4d, 0x5a, 0, 0]) });
  const r = await upload(t, bad, "bad.zip");
  assertEquals(r.status, 415);
  assert((await r.json()).detail.includes("evil.exe"));
  const bomb = zipSync({ "a.png": pixelBomb(50_000, 50_000) });
  assertEquals((await upload(t, bomb, "bomb.zip")).status, 413);
  const orphan = zipSync({ "a.png": testPng(), "b.txt": new TextEncoder().encode("no image") });
  assertEquals((await upload(t, orphan, "orphan.zip")).status, 400);
});

Deno.test("upload: safetensors are parsed (no pickle); malformed ones are 400", async () => {
  const t = await testEdge();
  const good = writeSafetensors({
    "unet.a.lora_A.weight": { dtype: "F32", shape: [2, 3], data: new Float32Array(6) },
  });
  const ok = await upload(t, good, "rex.safetensors");
  assertEquals(ok.status, 201);
  const f = await ok.json();
  assertEquals([f.kind, f.tensors], ["safetensors", 1]);
  const header = new TextEncoder().encode('{"w":{"dtype":"F32","shape":[1000],"data_offsets":[0,4000]}}');
  const truncated = new Uint8Array(8 + header.byteLength + 16);
  new DataView(truncated.buffer).setBigUint64(0, BigInt(header.byteLength), true);
  truncated.set(header, 8);
  const bad = await upload(t, truncated, "rex.safetensors");
  assertEquals(bad.status, 400);
  const p = await bad.json();
  assertEquals(p.type, "/docs#problem-invalid-safetensors");
  assert(p.detail.includes("truncated"), p.detail);
  assertEquals((await upload(t, new Uint8Array(64).fill(1), "x.safetensors")).status, 400);
});

Deno.test("files are tenant-scoped: another tenant gets 404 (never 403)", async () => {
  const t = await testEdge();
  const file = await (await upload(t, testPng(), "a.png")).json();
  for (
    const [path, method] of [[`/v1/files/${file.id}`, "GET"], [`/v1/files/${file.id}/content`, "GET"], [
      `/v1/files/${file.id}`,
      "DELETE",
    ]]
  ) {
    const res = await t.req(path, { method }, t.keyB);
    assertEquals(res.status, 404, `${method} ${path}`);
    await res.body?.cancel();
  }
  assertEquals((await (await t.req("/v1/files", {}, t.keyB)).json()).data, []);
  assertEquals((await t.req(`/v1/files/${file.id}`, { method: "DELETE" })).status, 204);
  assertEquals((await t.req(`/v1/files/${file.id}`)).status, 404);
});

Deno.test("content: Content-Disposition inline with the stored filename; filename* for non-ASCII names", async () => {
  const t = await testEdge();
  const png = testPng(4, 4);
  const disposition = async (name: string | null) => {
    const form = new FormData();
    form.set("content", new File([png as Uint8Array<ArrayBuffer>], "blob"));
    if (name !== null) form.set("filename", name);
    const res = await t.req("/v1/files", { method: "POST", body: form });
    assertEquals(res.status, 201);
    const file = await res.json();
    const content = await t.req(`/v1/files/${file.id}/content`);
    await content.body?.cancel();
    return { file, value: content.headers.get("content-disposition") };
  };
  assertEquals((await disposition("photo.png")).value, 'inline; filename="photo.png"');
  assertEquals(
    (await disposition("Été à Zürich 🌞.png")).value,
    `inline; filename="Ete a Zurich _.png"; filename*=UTF-8''%C3%89t%C3%A9%20%C3%A0%20Z%C3%BCrich%20%F0%9F%8C%9E.png`,
  );
  // Quotes, backslashes, directories, line breaks and bidi overrides cannot break or spoof the header.
  assertEquals(
    (await disposition('../../etc/a"b\\c\r\nSet-Cookie: x=1.png')).value,
    `inline; filename="cSet-Cookie: x=1.png"`,
  );
  assertEquals(
    (await disposition('say "hi" 100%.png')).value,
    `inline; filename="say _hi_ 100_.png"; filename*=UTF-8''say%20%22hi%22%20100%25.png`,
  );
  assertEquals(
    (await disposition("invoice\u202egnp.exe")).value,
    'inline; filename="invoicegnp.exe"',
  );
  // Without a usable name the id stands in, with the stored bytes' extension.
  const blob = await disposition("..");
  assertEquals(blob.value, `inline; filename="${blob.file.id}.png"`);
});
