/**
 * What an uploaded image is, read from its first bytes only: the format by magic bytes (never the name or
 * the declared content type) and the pixel size from the header. Limits are checked on this before any
 * decoding, so a decompression bomb (a tiny file declaring 100000 x 100000 pixels) costs nothing.
 *
 * @example
 * ```ts
 * sniffImage(pngBytes); // { format: "png", width: 64, height: 64 }
 * ```
 */
export type ImageFormat = "png" | "jpeg" | "webp";

export interface ImageHeader {
  format: ImageFormat;
  width: number;
  height: number;
}

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
const ascii = (b: Uint8Array, at: number, n: number) => String.fromCharCode(...b.subarray(at, at + n));

/** The image format by magic bytes, or null when the bytes are no PNG, JPEG or WebP. */
export function imageFormat(b: Uint8Array): ImageFormat | null {
  if (b.length >= 8 && PNG_SIGNATURE.every((v, i) => b[i] === v)) return "png";
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return "jpeg";
  if (b.length >= 12 && ascii(b, 0, 4) === "RIFF" && ascii(b, 8, 4) === "WEBP") return "webp";
  return null;
}

/** Format and pixel size; throws SyntaxError when the header is missing or malformed. */
export function sniffImage(b: Uint8Array): ImageHeader {
  const format = imageFormat(b);
  if (!format) throw new SyntaxError("not a PNG, JPEG or WebP image (by its first bytes)");
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const size = format === "png" ? pngSize(b, dv) : format === "jpeg" ? jpegSize(b, dv) : webpSize(b, dv);
  if (!size || size.width < 1 || size.height < 1) {
    throw new SyntaxError(`malformed ${format} header: no pixel size`);
  }
  return { format, ...size };
}

function pngSize(b: Uint8Array, dv: DataView) {
  if (b.length < 24 || ascii(b, 12, 4) !== "IHDR") return null;
  return { width: dv.getUint32(16), height: dv.getUint32(20) };
}

function jpegSize(b: Uint8Array, dv: DataView) {
  let at = 2;
  while (at + 4 <= b.length) {
    if (b[at] !== 0xff) return null;
    const marker = b[at + 1];
    if (marker === 0xff) {
      at++; // fill byte
      continue;
    }
    if (marker === 0xd8 || marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
      at += 2; // markers without a length
      continue;
    }
    const len = dv.getUint16(at + 2);
    const isSof = marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc;
    if (isSof) {
      return at + 9 <= b.length ? { width: dv.getUint16(at + 7), height: dv.getUint16(at + 5) } : null;
    }
    if (marker === 0xd9 || marker === 0xda || len < 2) return null; // end or scan data before any frame header
    at += 2 + len;
  }
  return null;
}

function webpSize(b: Uint8Array, dv: DataView) {
  if (b.length < 30) return null;
  const chunk = ascii(b, 12, 4);
  if (chunk === "VP8X") {
    const u24 = (at: number) => b[at] | (b[at + 1] << 8) | (b[at + 2] << 16);
    return { width: u24(24) + 1, height: u24(27) + 1 };
  }
  if (chunk === "VP8 ") {
    if (b[23] !== 0x9d || b[24] !== 0x01 || b[25] !== 0x2a) return null;
    return { width: dv.getUint16(26, true) & 0x3fff, height: dv.getUint16(28, true) & 0x3fff };
  }
  if (chunk === "VP8L") {
    if (b[20] !== 0x2f) return null;
    const bits = dv.getUint32(21, true);
    return { width: (bits & 0x3fff) + 1, height: ((bits >>> 14) & 0x3fff) + 1 };
  }
  return null;
}
