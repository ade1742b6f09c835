/**
 * Images in and out of the engine: PNG encode/decode (npm:fast-png, pure JS), conversion between RGB bytes
 * and NCHW float tensors in [-1, 1] (the VAE's range), and a bilinear resize for img2img inputs.
 *
 * @example
 * ```ts
 * const png = encodePng({ width: 2, height: 1, rgb: new Uint8Array([255, 0, 0, 0, 0, 255]) });
 * const img = decodePng(png); // { width: 2, height: 1, rgb }
 * ```
 */
import { decode, encode } from "fast-png";
import { Tensor } from "../tensor.ts";

/** An 8-bit RGB image, rows top to bottom. */
export interface RgbImage {
  width: number;
  height: number;
  rgb: Uint8Array;
}

export function encodePng(img: RgbImage): Uint8Array {
  return encode({ width: img.width, height: img.height, data: img.rgb, channels: 3, depth: 8 });
}

/** Decodes a PNG of any channel layout or depth to 8-bit RGB (alpha composited on white). */
export function decodePng(bytes: Uint8Array): RgbImage {
  let png;
  try {
    png = decode(bytes);
  } catch (e) {
    throw new SyntaxError(`not a readable PNG (${(e as Error).message})`);
  }
  const { width, height, channels, depth } = png;
  const src = png.data;
  const max = depth === 16 ? 65535 : (1 << depth) - 1;
  const rgb = new Uint8Array(width * height * 3);
  const palette = png.palette;
  for (let i = 0; i < width * height; i++) {
    let r: number, gr: number, b: number, a = 1;
    if (palette) {
      const p = palette[src[i]];
      [r, gr, b] = [p[0], p[1], p[2]];
      if (p.length > 3) a = p[3] / 255;
    } else {
      const at = (c: number) => (src[i * channels + c] / max) * 255;
      if (channels >= 3) [r, gr, b] = [at(0), at(1), at(2)];
      else r = gr = b = at(0);
      if (channels === 4 || channels === 2) a = src[i * channels + channels - 1] / max;
    }
    rgb[i * 3] = Math.round(r * a + 255 * (1 - a));
    rgb[i * 3 + 1] = Math.round(gr * a + 255 * (1 - a));
    rgb[i * 3 + 2] = Math.round(b * a + 255 * (1 - a));
  }
  return { width, height, rgb };
}

/** Bilinear resize (pixel centres aligned, as PIL's and torch's align_corners=False). */
export function resizeBilinear(img: RgbImage, width: number, height: number): RgbImage {
  if (img.width === width && img.height === height) return img;
  const out = new Uint8Array(width * height * 3);
  const sx = img.width / width, sy = img.height / height;
  for (let y = 0; y < height; y++) {
    const fy = Math.min(Math.max((y + 0.5) * sy - 0.5, 0), img.height - 1);
    const y0 = Math.floor(fy), y1 = Math.min(y0 + 1, img.height - 1), wy = fy - y0;
    for (let x = 0; x < width; x++) {
      const fx = Math.min(Math.max((x + 0.5) * sx - 0.5, 0), img.width - 1);
      const x0 = Math.floor(fx), x1 = Math.min(x0 + 1, img.width - 1), wx = fx - x0;
      for (let c = 0; c < 3; c++) {
        const p = (yy: number, xx: number) => img.rgb[(yy * img.width + xx) * 3 + c];
        const v = (p(y0, x0) * (1 - wx) + p(y0, x1) * wx) * (1 - wy) +
          (p(y1, x0) * (1 - wx) + p(y1, x1) * wx) * wy;
        out[(y * width + x) * 3 + c] = Math.round(v);
      }
    }
  }
  return { width, height, rgb: out };
}

/** RGB images (same size) -> NCHW float32 in [-1, 1] (`range` "unit": in [0, 1]). */
export function imagesToTensor(images: RgbImage[], range: "signed" | "unit" = "signed"): Tensor {
  const scale = range === "unit" ? 1 / 255 : 1 / 127.5, shift = range === "unit" ? 0 : 1;
  const { width: W, height: H } = images[0];
  const t = Tensor.zeros([images.length, 3, H, W]);
  images.forEach((img, n) => {
    if (img.width !== W || img.height !== H) {
      throw new RangeError(`image ${n} is ${img.width}x${img.height}, expected ${W}x${H}`);
    }
    for (let i = 0; i < H * W; i++) {
      for (let c = 0; c < 3; c++) t.f[((n * 3 + c) * H * W) + i] = img.rgb[i * 3 + c] * scale - shift;
    }
  });
  return t;
}

/** NCHW float32 in [-1, 1] -> RGB images (clamped, rounded). */
export function tensorToImages(t: Tensor): RgbImage[] {
  const [N, C, H, W] = t.dims;
  if (C !== 3) throw new RangeError(`expected 3 channels, got ${C}`);
  const out: RgbImage[] = [];
  for (let n = 0; n < N; n++) {
    const rgb = new Uint8Array(H * W * 3);
    for (let i = 0; i < H * W; i++) {
      for (let c = 0; c < 3; c++) {
        const v = (t.f[(n * 3 + c) * H * W + i] + 1) * 127.5;
        rgb[i * 3 + c] = Math.min(255, Math.max(0, Math.round(v)));
      }
    }
    out.push({ width: W, height: H, rgb });
  }
  return out;
}
