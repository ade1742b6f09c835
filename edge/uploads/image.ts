/**
 * Image re-encoding: an accepted upload is decoded (fast-png, jpeg-js: pure JavaScript; WebP with libwebp
 * compiled to WebAssembly, @cwasm/webp) and encoded again as
 * a plain 8-bit PNG, so nothing but pixels survives (no metadata, no trailing payloads, no parser quirks
 * reach the workers). Call only after `sniffImage` checked the pixel limit: decoding is the expensive part.
 *
 * @example
 * ```ts
 * const { png, width, height } = reencodeAsPng(bytes, sniffImage(bytes));
 * ```
 */
import { convertIndexedToRgb, decode as decodePng, encode as encodePng } from "fast-png";
import jpeg from "jpeg-js";
import * as webp from "@cwasm/webp";
import type { ImageHeader } from "./image_header.ts";

export interface ReencodedImage {
  png: Uint8Array;
  width: number;
  height: number;
}

/** Decodes to RGBA 8-bit; throws SyntaxError for corrupt data. */
export function decodeToRgba(bytes: Uint8Array, header: ImageHeader): Uint8Array {
  if (header.format === "webp") {
    let img: { width: number; height: number; data: Uint8ClampedArray };
    try {
      img = webp.decode(bytes);
    } catch (e) {
      throw new SyntaxError(`not a readable WebP (${(e as Error)?.message ?? e})`);
    }
    if (img.width !== header.width || img.height !== header.height) {
      throw new SyntaxError(
        `not a readable WebP (decoded ${img.width}x${img.height}, header says ${header.width}x${header.height})`,
      );
    }
    return new Uint8Array(img.data.buffer, img.data.byteOffset, img.data.byteLength);
  }
  if (header.format === "jpeg") {
    try {
      const img = jpeg.decode(bytes, {
        useTArray: true,
        formatAsRGBA: true,
        maxResolutionInMP: Math.ceil((header.width * header.height) / 1e6) + 1,
        maxMemoryUsageInMB: Math.ceil((header.width * header.height * 8) / 2 ** 20) + 64,
      });
      if (img.width !== header.width || img.height !== header.height) {
        throw new Error("size differs from header");
      }
      return img.data;
    } catch (e) {
      throw new SyntaxError(`not a readable JPEG (${(e as Error).message})`);
    }
  }
  let png;
  try {
    png = decodePng(bytes);
  } catch (e) {
    throw new SyntaxError(`not a readable PNG (${(e as Error).message})`);
  }
  const { width, height, depth } = png;
  const n = width * height;
  const out = new Uint8Array(n * 4);
  if (png.palette) {
    const rgb = convertIndexedToRgb(png);
    const c = png.palette[0].length;
    for (let i = 0; i < n; i++) {
      out.set(rgb.subarray(i * c, i * c + 3), i * 4);
      out[i * 4 + 3] = c === 4 ? rgb[i * c + 3] : 255;
    }
    return out;
  }
  const channels = png.channels;
  const max = 2 ** depth - 1;
  const rowSamples = width * channels;
  const rowBytes = depth < 8 ? Math.ceil((rowSamples * depth) / 8) : 0;
  const sample = (i: number, ch: number): number => {
    const k = i * channels + ch;
    if (depth >= 8) return Math.round((png.data[k] / max) * 255);
    const row = Math.floor(k / rowSamples), col = k % rowSamples;
    const byte = png.data[row * rowBytes + Math.floor((col * depth) / 8)];
    const shift = 8 - depth - ((col * depth) % 8);
    return Math.round((((byte >> shift) & max) / max) * 255);
  };
  for (let i = 0; i < n; i++) {
    const gray = channels < 3;
    out[i * 4] = sample(i, 0);
    out[i * 4 + 1] = gray ? out[i * 4] : sample(i, 1);
    out[i * 4 + 2] = gray ? out[i * 4] : sample(i, 2);
    out[i * 4 + 3] = channels === 2 || channels === 4 ? sample(i, channels - 1) : 255;
  }
  return out;
}

export function reencodeAsPng(bytes: Uint8Array, header: ImageHeader): ReencodedImage {
  const rgba = decodeToRgba(bytes, header);
  const { width, height } = header;
  let opaque = true;
  for (let i = 3; i < rgba.length; i += 4) if (rgba[i] !== 255) (opaque = false), (i = rgba.length);
  let data = rgba, channels = 4;
  if (opaque) {
    data = new Uint8Array(width * height * 3);
    for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) data.set(rgba.subarray(i, i + 3), j);
    channels = 3;
  }
  return { png: encodePng({ width, height, data, channels, depth: 8 }), width, height };
}
