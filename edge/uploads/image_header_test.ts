import jpeg from "jpeg-js";
import { assertEquals, assertThrows } from "../../gpu-worker/testing.ts";
import { testPng } from "../testing.ts";
import { imageFormat, sniffImage } from "./image_header.ts";

Deno.test("image headers: format by magic bytes and size without decoding", () => {
  assertEquals(sniffImage(testPng(13, 7)), { format: "png", width: 13, height: 7 });
  const jpg = jpeg.encode({ width: 21, height: 9, data: new Uint8Array(21 * 9 * 4) }, 80).data;
  assertEquals(sniffImage(jpg), { format: "jpeg", width: 21, height: 9 });
  const webp = (chunk: string, body: number[]) => {
    const b = new Uint8Array(40);
    b.set(new TextEncoder().encode("RIFF"), 0);
    b.set(new TextEncoder().encode(`WEBP${chunk}`), 8);
    b.set(body, 20);
    return b;
  };
  assertEquals(sniffImage(webp("VP8X", [0, 0, 0, 0, 99, 0, 0, 49, 0, 0])), {
    format: "webp",
    width: 100,
    height: 50,
  });
  assertEquals(sniffImage(webp("VP8 ", [0, 0, 0, 0x9d, 0x01, 0x2a, 64, 0, 32, 0])).width, 64);
  const bits = (640 - 1) | ((480 - 1) << 14);
  assertEquals(
    sniffImage(webp("VP8L", [0x2f, bits & 255, (bits >> 8) & 255, (bits >> 16) & 255, bits >>> 24])),
    {
      format: "webp",
      width: 640,
      height: 480,
    },
  );
  assertEquals(imageFormat(new TextEncoder().encode("GIF89a")), null);
  assertThrows(() => sniffImage(testPng().subarray(0, 16)), SyntaxError);
  assertThrows(() => sniffImage(new Uint8Array([0xff, 0xd8, 0xff, 0xd9])), SyntaxError);
});
