import jpeg from "jpeg-js";
import { assert, assertEquals, assertRejects, assertThrows } from "../testing.ts";
import { encodePng, resizeBilinear, type RgbImage } from "../image/png.ts";
import { Rng } from "../random.ts";
import {
  applyExifOrientation,
  applyVariant,
  chooseVariant,
  type CropVariant,
  decodeImage,
  ImageLoadError,
  jpegOrientation,
  LatentCache,
  loadImageFolder,
  resizeAntialiased,
  resizeShorterSide,
  shorterSideSize,
  transformBatch,
  transformImage,
} from "./data.ts";

/** An image whose pixel (x, y) is (x, y, 7) (so positions can be read back). */
function coords(width: number, height: number): RgbImage {
  const rgb = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) rgb.set([x, y, 7], (y * width + x) * 3);
  }
  return { width, height, rgb };
}

function px(img: RgbImage, x: number, y: number): number[] {
  const i = (y * img.width + x) * 3;
  return Array.from(img.rgb.subarray(i, i + 3));
}

function solid(width: number, height: number, color: number[]): RgbImage {
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0; i < width * height; i++) rgb.set(color, i * 3);
  return { width, height, rgb };
}

function encodeJpeg(img: RgbImage, orientation?: number): Uint8Array {
  const rgba = new Uint8Array(img.width * img.height * 4);
  for (let i = 0; i < img.width * img.height; i++) {
    rgba.set([...img.rgb.subarray(i * 3, i * 3 + 3), 255], i * 4);
  }
  const bytes = new Uint8Array(jpeg.encode({ width: img.width, height: img.height, data: rgba }, 95).data);
  if (orientation === undefined) return bytes;
  // APP1: "Exif\0\0", big-endian TIFF header, IFD0 with one SHORT entry 0x0112 = orientation.
  const app1 = new Uint8Array([
    0xff,
    0xe1,
    0,
    34,
    0x45,
    0x78,
    0x69,
    0x66,
    0,
    0,
    0x4d,
    0x4d,
    0,
    42,
    0,
    0,
    0,
    8,
    0,
    1,
    0x01,
    0x12,
    0,
    3,
    0,
    0,
    0,
    1,
    0,
    orientation,
    0,
    0,
    0,
    0,
    0,
    0,
  ]);
  return new Uint8Array([...bytes.subarray(0, 2), ...app1, ...bytes.subarray(2)]);
}

Deno.test("a folder loads sorted, with caption sidecars, PNG and JPEG", async () => {
  const dir = await Deno.makeTempDir();
  try {
    Deno.writeFileSync(`${dir}/b.png`, encodePng(solid(4, 3, [255, 0, 0])));
    Deno.writeFileSync(`${dir}/a.JPG`, encodeJpeg(solid(8, 8, [0, 0, 255])));
    Deno.writeFileSync(`${dir}/c.png`, encodePng(solid(2, 2, [9, 9, 9])));
    Deno.writeTextFileSync(`${dir}/b.txt`, "  a photo of sks dog\n");
    Deno.writeTextFileSync(`${dir}/notes.md`, "ignored");
    Deno.writeTextFileSync(`${dir}/.hidden.png`, "ignored");
    const items = await loadImageFolder(dir);
    assertEquals(items.map((i) => [i.stem, i.caption]), [["a", null], ["b", "a photo of sks dog"], [
      "c",
      null,
    ]]);
    assertEquals([items[0].image.width, items[0].image.height, items[1].image.width], [8, 8, 4]);
    const blue = px(items[0].image, 4, 4);
    assert(blue[0] < 10 && blue[1] < 10 && blue[2] > 245, `JPEG blue decoded as ${blue}`);
    assertEquals(px(items[1].image, 3, 2), [255, 0, 0]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("unreadable images fail naming the file; empty folders fail", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assertRejects(() => loadImageFolder(dir), ImageLoadError, "no training images");
    Deno.writeFileSync(`${dir}/good.png`, encodePng(solid(2, 2, [1, 2, 3])));
    Deno.writeFileSync(
      `${dir}/broken.png`,
      new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 1, 2]),
    );
    await assertRejects(() => loadImageFolder(dir), ImageLoadError, `${dir}/broken.png: not a readable PNG`);
    Deno.removeSync(`${dir}/broken.png`);
    Deno.writeTextFileSync(`${dir}/text.jpg`, "this is not a jpeg");
    await assertRejects(() => loadImageFolder(dir), ImageLoadError, `${dir}/text.jpg: not a PNG or JPEG`);
    Deno.writeFileSync(`${dir}/text.jpg`, encodeJpeg(solid(8, 8, [0, 0, 0])).subarray(0, 40));
    await assertRejects(() => loadImageFolder(dir), ImageLoadError, `${dir}/text.jpg: not a readable JPEG`);
    await assertRejects(() => loadImageFolder(`${dir}/missing`), ImageLoadError, "cannot read the folder");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("EXIF orientation is applied to JPEGs (6: rotate 90 clockwise)", () => {
  // Left half red, right half blue, 8x4: rotated clockwise it is 4x8 with red on top.
  const img = solid(8, 4, [255, 0, 0]);
  for (let y = 0; y < 4; y++) for (let x = 4; x < 8; x++) img.rgb.set([0, 0, 255], (y * 8 + x) * 3);
  const bytes = encodeJpeg(img, 6);
  assertEquals(jpegOrientation(bytes), 6);
  assertEquals(jpegOrientation(encodeJpeg(img)), 1);
  const out = decodeImage(bytes, "rot.jpg");
  assertEquals([out.width, out.height], [4, 8]);
  assert(px(out, 2, 1)[0] > 200 && px(out, 2, 6)[2] > 200, "red on top, blue below");
});

Deno.test("orientation transforms are PIL's exif_transpose", () => {
  const img = coords(3, 2);
  const o6 = applyExifOrientation(img, 6);
  assertEquals([o6.width, o6.height, ...px(o6, 0, 0), ...px(o6, 1, 0)], [2, 3, 0, 1, 7, 0, 0, 7]);
  const o8 = applyExifOrientation(img, 8);
  assertEquals(px(o8, 0, 0), [2, 0, 7]);
  assertEquals(applyExifOrientation(o6, 8), img);
  assertEquals(applyExifOrientation(applyExifOrientation(img, 5), 5), img);
  assertEquals(applyExifOrientation(applyExifOrientation(img, 7), 7), img);
  assertEquals(px(applyExifOrientation(img, 2), 0, 0), [2, 0, 7]);
  assertEquals(px(applyExifOrientation(img, 3), 0, 0), [2, 1, 7]);
  assertEquals(px(applyExifOrientation(img, 4), 0, 0), [0, 1, 7]);
  assertEquals(applyExifOrientation(img, 1), img);
});

Deno.test("resize: shorter side to the resolution, PIL-style bilinear", () => {
  assertEquals(shorterSideSize(640, 480, 256), [341, 256]);
  assertEquals(shorterSideSize(480, 640, 256), [256, 341]);
  assertEquals(shorterSideSize(300, 300, 512), [512, 512]);
  const r = resizeShorterSide(solid(40, 20, [10, 200, 30]), 8);
  assertEquals([r.width, r.height], [16, 8]);
  assert(r.rgb.every((v, i) => v === [10, 200, 30][i % 3]), "constant stays constant");
  // Upscaling is plain bilinear.
  const small = coords(5, 4);
  const up = resizeAntialiased(small, 13, 9), ref = resizeBilinear(small, 13, 9);
  assert(up.rgb.every((v, i) => Math.abs(v - ref.rgb[i]) <= 1), "upscale matches bilinear");
  // Shrinking by 2 uses the widened triangle: interior weights 1/8, 3/8, 3/8, 1/8.
  const row = { width: 8, height: 1, rgb: new Uint8Array(24) };
  [0, 80, 160, 240, 0, 80, 160, 240].forEach((v, i) => row.rgb.fill(v, i * 3, i * 3 + 3));
  const half = resizeAntialiased(row, 4, 1);
  assertEquals(px(half, 1, 0)[0], Math.round((80 + 3 * 160 + 3 * 240 + 0) / 8));
  assertEquals(px(half, 0, 0)[0], Math.round((3 * 0 + 3 * 80 + 160) / 7));
});

Deno.test("center crop offsets round half to even; random crops and flips are seeded", () => {
  assertEquals(chooseVariant(341, 256, { resolution: 256 }), { left: 42, top: 0, flip: false });
  assertEquals(chooseVariant(259, 256, { resolution: 256 }), { left: 2, top: 0, flip: false });
  assertThrows(() => chooseVariant(300, 256, { resolution: 256, randomFlip: true }), Error, "needs an rng");
  const opts = { resolution: 64, centerCrop: false, randomFlip: true };
  const pick = (seed: number) => chooseVariant(100, 80, opts, new Rng(seed));
  assertEquals(pick(3), pick(3));
  const many = Array.from({ length: 400 }, (_, s) => pick(s));
  assert(many.every((v) => v.left >= 0 && v.left <= 36 && v.top >= 0 && v.top <= 16));
  assertEquals(new Set(many.map((v) => v.left)).size, 37, "every left offset is reachable");
  const flips = many.filter((v) => v.flip).length;
  assert(flips > 150 && flips < 250, `${flips} flips of 400`);
});

Deno.test("crop and flip cut the right pixels; transforms give [-1, 1] NCHW", () => {
  const img = coords(10, 6);
  const v: CropVariant = { left: 3, top: 1, flip: false };
  const crop = applyVariant(img, v, 4);
  assertEquals([px(crop, 0, 0), px(crop, 3, 3)], [[3, 1, 7], [6, 4, 7]]);
  const flipped = applyVariant(img, { ...v, flip: true }, 4);
  assertEquals([px(flipped, 0, 0), px(flipped, 3, 0)], [[6, 1, 7], [3, 1, 7]]);
  assertThrows(() => applyVariant(img, { left: 7, top: 0, flip: false }, 4), RangeError);

  const photo = coords(30, 20);
  const a = transformImage(photo, { resolution: 8, centerCrop: false, randomFlip: true }, new Rng(5));
  const b = transformImage(photo, { resolution: 8, centerCrop: false, randomFlip: true }, new Rng(5));
  assertEquals(a, b);
  const { pixels, variants } = transformBatch([photo, coords(20, 30)], { resolution: 8 });
  assertEquals(pixels.dims, [2, 3, 8, 8]);
  assert(pixels.f.every((x) => x >= -1 && x <= 1));
  assertEquals(variants, [{ left: 2, top: 0, flip: false }, { left: 0, top: 2, flip: false }]);
});

Deno.test("the latent cache encodes each (image, variant) once", async () => {
  const calls: string[] = [];
  let fail = true;
  const cache = new LatentCache((index, v) => {
    calls.push(LatentCache.key(index, v));
    if (index === 9 && fail) return Promise.reject(new Error("vae oom"));
    return Promise.resolve(Float32Array.of(index, v.left, v.top, v.flip ? 1 : 0));
  });
  const v = { left: 1, top: 2, flip: false };
  const [x, y] = await Promise.all([cache.get(0, v), cache.get(0, { ...v })]);
  assert(x === y);
  await cache.get(0, v);
  assertEquals(Array.from(await cache.get(0, { ...v, flip: true })), [0, 1, 2, 1]);
  await cache.get(1, v);
  assertEquals([cache.size, cache.encodeCount], [3, 3]);
  await assertRejects(() => cache.get(9, v), Error, "vae oom");
  await Promise.resolve();
  assert(!cache.has(9, v), "a failed encode is not cached");
  fail = false;
  await cache.get(9, v);
  assertEquals(calls, ["0:1,2,0", "0:1,2,1", "1:1,2,0", "9:1,2,0", "9:1,2,0"]);

  const small = new LatentCache((i) => Promise.resolve(Float32Array.of(i)), 2);
  for (const i of [0, 1, 2]) await small.get(i, v);
  assertEquals([small.size, small.has(0, v), small.has(2, v)], [2, false, true]);
});
