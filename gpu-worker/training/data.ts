/**
 * Training images: loading a folder (PNG and JPEG, optional `name.txt` caption sidecars, EXIF orientation
 * applied as diffusers' DreamBooth script does), the transforms of diffusers' training scripts (resize the
 * shorter side to `resolution` with PIL-style bilinear, center or seeded random crop, seeded horizontal flip,
 * [-1, 1] NCHW), and a cache of VAE latents per (image, crop/flip variant) so each variant is encoded once.
 *
 * @example
 * ```ts
 * const items = await loadImageFolder("data/dog");
 * const opts = { resolution: 512, centerCrop: true, randomFlip: true };
 * const { image, variant } = transformImage(items[0].image, opts, new Rng(1));
 * const pixels = imagesToTensor([image]); // [1, 3, 512, 512] in [-1, 1]
 * ```
 */
import jpeg from "jpeg-js";
import { decodePng, imagesToTensor, type RgbImage } from "../image/png.ts";
import type { Rng } from "../random.ts";
import type { Tensor } from "../tensor.ts";

/** An unreadable or unusable training file; the message starts with its path. */
export class ImageLoadError extends Error {
  constructor(readonly path: string, message: string) {
    super(`${path}: ${message}`);
    this.name = "ImageLoadError";
  }
}

/** One training example as loaded: `caption` is the sidecar's trimmed text, or null without one. */
export interface TrainingImage {
  path: string;
  /** File name without its extension (the sidecar's stem). */
  stem: string;
  image: RgbImage;
  caption: string | null;
}

/** Image extensions `loadImageFolder` reads (case-insensitive). */
export const IMAGE_EXTENSIONS = [".png", ".jpg", ".jpeg"];

/** Largest image we decode, in pixels (JPEG's decoder also caps its memory). */
const MAX_PIXELS = 100_000_000;

/**
 * Decodes PNG or JPEG bytes (sniffed from the signature, not the name) to RGB, applying a JPEG's EXIF
 * orientation. Errors are ImageLoadErrors naming `source`.
 */
export function decodeImage(bytes: Uint8Array, source: string): RgbImage {
  if (bytes.length >= 8 && bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47) {
    const w = bytes.length >= 24 ? new DataView(bytes.buffer, bytes.byteOffset + 16, 8) : null;
    if (w && w.getUint32(0) * w.getUint32(4) > MAX_PIXELS) {
      throw new ImageLoadError(
        source,
        `PNG is ${w.getUint32(0)}x${w.getUint32(4)}, over ${MAX_PIXELS} pixels`,
      );
    }
    try {
      return decodePng(bytes);
    } catch (e) {
      throw new ImageLoadError(source, (e as Error).message);
    }
  }
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) {
    let raw;
    try {
      raw = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: false, maxResolutionInMP: MAX_PIXELS / 1e6 });
    } catch (e) {
      throw new ImageLoadError(source, `not a readable JPEG (${(e as Error).message})`);
    }
    if (!(raw.width > 0 && raw.height > 0)) throw new ImageLoadError(source, "JPEG has no pixels");
    return applyExifOrientation(
      { width: raw.width, height: raw.height, rgb: raw.data },
      jpegOrientation(bytes),
    );
  }
  throw new ImageLoadError(source, "not a PNG or JPEG file (unrecognized signature)");
}

/**
 * Loads every PNG/JPEG in `dir` (not recursive; hidden files skipped), sorted by file name (code-unit order,
 * so indices are stable across machines), each with its `stem.txt` caption when present. An unreadable image
 * throws an ImageLoadError naming it; a folder without images throws too.
 */
export async function loadImageFolder(dir: string): Promise<TrainingImage[]> {
  const files = new Map<string, string>();
  try {
    for await (const e of Deno.readDir(dir)) {
      if (e.isFile && !e.name.startsWith(".")) files.set(e.name, `${dir}/${e.name}`);
    }
  } catch (e) {
    throw new ImageLoadError(dir, `cannot read the folder (${(e as Error).message})`);
  }
  const names = [...files.keys()].filter((n) => IMAGE_EXTENSIONS.includes(extension(n))).sort();
  if (!names.length) {
    throw new ImageLoadError(dir, `no training images (${IMAGE_EXTENSIONS.join(", ")}) in the folder`);
  }
  const out: TrainingImage[] = [];
  for (const name of names) {
    const path = files.get(name)!;
    const stem = name.slice(0, name.length - extension(name).length);
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(path);
    } catch (e) {
      throw new ImageLoadError(path, `cannot read (${(e as Error).message})`);
    }
    const image = decodeImage(bytes, path);
    let caption: string | null = null;
    const sidecar = files.get(`${stem}.txt`);
    if (sidecar) {
      try {
        caption = new TextDecoder("utf-8", { fatal: true }).decode(await Deno.readFile(sidecar)).trim();
      } catch (e) {
        throw new ImageLoadError(sidecar, `caption is not readable UTF-8 text (${(e as Error).message})`);
      }
    }
    out.push({ path, stem, image, caption });
  }
  return out;
}

function extension(name: string): string {
  const dot = name.lastIndexOf(".");
  return dot <= 0 ? "" : name.slice(dot).toLowerCase();
}

/** Options of diffusers' training transforms (`--resolution`, `--center_crop`, `--random_flip`). */
export interface TransformOptions {
  resolution: number;
  /** Center crop (default) or, when false, a seeded random crop. */
  centerCrop?: boolean;
  randomFlip?: boolean;
}

/** Which crop of the resized image, and whether it is mirrored: the key of a latent variant. */
export interface CropVariant {
  left: number;
  top: number;
  flip: boolean;
}

/**
 * Size after torchvision's `Resize(resolution)`: the shorter side becomes `resolution`, the longer one
 * `floor(resolution * long / short)`.
 */
export function shorterSideSize(width: number, height: number, resolution: number): [number, number] {
  if (width <= height) return [resolution, Math.floor(resolution * height / width)];
  return [Math.floor(resolution * width / height), resolution];
}

/** Resizes so the shorter side is `resolution` (PIL bilinear, antialiased when shrinking). */
export function resizeShorterSide(img: RgbImage, resolution: number): RgbImage {
  if (!Number.isSafeInteger(resolution) || resolution < 1) throw new RangeError(`resolution ${resolution}`);
  const [w, h] = shorterSideSize(img.width, img.height, resolution);
  return resizeAntialiased(img, w, h);
}

/**
 * PIL's BILINEAR resize: a separable triangle filter whose support widens with the shrink factor (so
 * downscaling averages instead of aliasing), horizontal pass first, rounded to 8 bits in between. Upscaling
 * equals plain bilinear with pixel centres aligned.
 */
export function resizeAntialiased(img: RgbImage, width: number, height: number): RgbImage {
  if (!(width >= 1 && height >= 1)) throw new RangeError(`cannot resize to ${width}x${height}`);
  let cur = img;
  if (width !== img.width) cur = resample(cur, width, true);
  if (height !== img.height) cur = resample(cur, height, false);
  return cur;
}

function resample(img: RgbImage, outSize: number, horizontal: boolean): RgbImage {
  const inSize = horizontal ? img.width : img.height;
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = filterScale; // triangle filter support 1, widened
  const starts = new Int32Array(outSize);
  const weights: Float64Array[] = [];
  for (let o = 0; o < outSize; o++) {
    const center = (o + 0.5) * scale;
    const lo = Math.max(Math.trunc(center - support + 0.5), 0);
    const hi = Math.min(Math.trunc(center + support + 0.5), inSize);
    const w = new Float64Array(hi - lo);
    let sum = 0;
    for (let j = lo; j < hi; j++) {
      const x = Math.abs((j - center + 0.5) / filterScale);
      w[j - lo] = x < 1 ? 1 - x : 0;
      sum += w[j - lo];
    }
    for (let k = 0; k < w.length; k++) w[k] /= sum;
    starts[o] = lo;
    weights.push(w);
  }
  const W = horizontal ? outSize : img.width, H = horizontal ? img.height : outSize;
  const out = new Uint8Array(W * H * 3);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const o = horizontal ? x : y, w = weights[o], lo = starts[o];
      for (let c = 0; c < 3; c++) {
        let v = 0;
        for (let k = 0; k < w.length; k++) {
          const src = horizontal ? (y * img.width + lo + k) : ((lo + k) * img.width + x);
          v += w[k] * img.rgb[src * 3 + c];
        }
        out[(y * W + x) * 3 + c] = Math.min(255, Math.max(0, Math.round(v)));
      }
    }
  }
  return { width: W, height: H, rgb: out };
}

/**
 * Picks the crop and flip for a resized `width` x `height` image, as torchvision would: CenterCrop offsets
 * `round((size - resolution) / 2)` (Python's round, half to even); RandomCrop top then left, each uniform over
 * the valid offsets; then the flip with probability 1/2. `rng` is needed for a random crop or flip.
 */
export function chooseVariant(width: number, height: number, opts: TransformOptions, rng?: Rng): CropVariant {
  const r = opts.resolution;
  if (width < r || height < r) throw new RangeError(`a ${width}x${height} image has no ${r}x${r} crop`);
  const center = opts.centerCrop ?? true;
  if ((!center || opts.randomFlip) && !rng) throw new Error("a random crop or flip needs an rng");
  let top: number, left: number;
  if (center) {
    top = roundHalfEven((height - r) / 2);
    left = roundHalfEven((width - r) / 2);
  } else {
    top = rng!.int(height - r + 1);
    left = rng!.int(width - r + 1);
  }
  const flip = opts.randomFlip ? rng!.uniform() < 0.5 : false;
  return { left, top, flip };
}

/** Crops `resolution` x `resolution` at the variant's offsets, mirrored when `variant.flip`. */
export function applyVariant(img: RgbImage, variant: CropVariant, resolution: number): RgbImage {
  const { left, top, flip } = variant;
  if (left < 0 || top < 0 || left + resolution > img.width || top + resolution > img.height) {
    throw new RangeError(
      `crop ${resolution}x${resolution} at (${left}, ${top}) leaves a ${img.width}x${img.height} image`,
    );
  }
  const out = new Uint8Array(resolution * resolution * 3);
  for (let y = 0; y < resolution; y++) {
    for (let x = 0; x < resolution; x++) {
      const sx = left + (flip ? resolution - 1 - x : x);
      const s = ((top + y) * img.width + sx) * 3, d = (y * resolution + x) * 3;
      out[d] = img.rgb[s];
      out[d + 1] = img.rgb[s + 1];
      out[d + 2] = img.rgb[s + 2];
    }
  }
  return { width: resolution, height: resolution, rgb: out };
}

/**
 * The whole training transform of one image: resize shorter side, crop, flip. Callers transforming the same
 * image often should `resizeShorterSide` once and use `chooseVariant` + `applyVariant`.
 */
export function transformImage(
  img: RgbImage,
  opts: TransformOptions,
  rng?: Rng,
): { image: RgbImage; variant: CropVariant } {
  const resized = resizeShorterSide(img, opts.resolution);
  const variant = chooseVariant(resized.width, resized.height, opts, rng);
  return { image: applyVariant(resized, variant, opts.resolution), variant };
}

/** Transforms a batch (in order, drawing from one rng) into NCHW [-1, 1] pixels. */
export function transformBatch(
  images: RgbImage[],
  opts: TransformOptions,
  rng?: Rng,
): { pixels: Tensor; variants: CropVariant[] } {
  const done = images.map((img) => transformImage(img, opts, rng));
  return { pixels: imagesToTensor(done.map((d) => d.image)), variants: done.map((d) => d.variant) };
}

/** Python's round(): nearest integer, ties to even. */
function roundHalfEven(x: number): number {
  const f = Math.floor(x), d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** Encodes one image variant to latents (typically: transform, then the VAE encoder's mean or a sample). */
export type LatentEncoder = (index: number, variant: CropVariant) => Promise<Float32Array>;

/**
 * Latents per (image index, crop/flip variant), each encoded once by the caller's encoder; concurrent requests
 * for the same key share one encode, and a failed encode is not cached. With center crop there are at most
 * two variants per image (flipped or not); a random crop multiplies them, so set `maxEntries` to bound memory
 * (oldest-inserted entries are dropped first).
 */
export class LatentCache {
  private readonly entries = new Map<string, Promise<Float32Array>>();
  private encodes = 0;

  constructor(private readonly encoder: LatentEncoder, private readonly maxEntries = Infinity) {}

  /** The map key: `index:left,top,flip`. */
  static key(index: number, variant: CropVariant): string {
    return `${index}:${variant.left},${variant.top},${variant.flip ? 1 : 0}`;
  }

  /** The latents of this variant, encoding them on first use. */
  get(index: number, variant: CropVariant): Promise<Float32Array> {
    const key = LatentCache.key(index, variant);
    let p = this.entries.get(key);
    if (!p) {
      this.encodes++;
      p = this.encoder(index, { ...variant });
      p.catch(() => this.entries.get(key) === p && this.entries.delete(key));
      this.entries.set(key, p);
      if (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
    }
    return p;
  }

  has(index: number, variant: CropVariant): boolean {
    return this.entries.has(LatentCache.key(index, variant));
  }

  /** Cached variants. */
  get size(): number {
    return this.entries.size;
  }

  /** How many times the encoder has been called. */
  get encodeCount(): number {
    return this.encodes;
  }

  clear(): void {
    this.entries.clear();
  }
}

/** A JPEG's EXIF orientation (1..8; 1 when absent or unreadable). */
export function jpegOrientation(bytes: Uint8Array): number {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 2;
  while (pos + 4 <= bytes.length && bytes[pos] === 0xff) {
    const marker = bytes[pos + 1];
    if (marker === 0xd8 || (marker >= 0xd0 && marker <= 0xd7) || marker === 0x01 || marker === 0xff) {
      pos += marker === 0xff ? 1 : 2;
      continue;
    }
    if (marker === 0xda || marker === 0xd9) break; // start of scan / end of image: no more headers
    const len = dv.getUint16(pos + 2);
    const seg = pos + 4;
    if (marker === 0xe1 && len >= 8 && seg + len - 2 <= bytes.length) {
      const isExif = bytes[seg] === 0x45 && bytes[seg + 1] === 0x78 && bytes[seg + 2] === 0x69 &&
        bytes[seg + 3] === 0x66 && bytes[seg + 4] === 0 && bytes[seg + 5] === 0;
      if (isExif) return tiffOrientation(dv, seg + 6, seg + len - 2);
    }
    pos += 2 + len;
  }
  return 1;
}

function tiffOrientation(dv: DataView, tiff: number, end: number): number {
  try {
    const order = dv.getUint16(tiff);
    if (order !== 0x4949 && order !== 0x4d4d) return 1;
    const le = order === 0x4949;
    if (dv.getUint16(tiff + 2, le) !== 42) return 1;
    const ifd = tiff + dv.getUint32(tiff + 4, le);
    const count = dv.getUint16(ifd, le);
    for (let i = 0; i < count; i++) {
      const entry = ifd + 2 + i * 12;
      if (entry + 12 > end) return 1;
      if (dv.getUint16(entry, le) === 0x0112) {
        const v = dv.getUint16(entry + 8, le);
        return v >= 1 && v <= 8 ? v : 1;
      }
    }
  } catch {
    // offsets past the end of the segment: treat as no orientation
  }
  return 1;
}

/** Applies an EXIF orientation (PIL's `exif_transpose`): 2-4 mirror/rotate 180, 5-8 also swap the axes. */
export function applyExifOrientation(img: RgbImage, orientation: number): RgbImage {
  if (orientation <= 1 || orientation > 8) return img;
  const { width: W, height: H } = img;
  const swap = orientation >= 5;
  const ow = swap ? H : W, oh = swap ? W : H;
  const out = new Uint8Array(ow * oh * 3);
  for (let y = 0; y < oh; y++) {
    for (let x = 0; x < ow; x++) {
      let sx: number, sy: number;
      switch (orientation) {
        case 2:
          [sx, sy] = [W - 1 - x, y];
          break;
        case 3:
          [sx, sy] = [W - 1 - x, H - 1 - y];
          break;
        case 4:
          [sx, sy] = [x, H - 1 - y];
          break;
        case 5: // transpose
          [sx, sy] = [y, x];
          break;
        case 6: // rotate 90 clockwise
          [sx, sy] = [y, H - 1 - x];
          break;
        case 7: // transverse
          [sx, sy] = [W - 1 - y, H - 1 - x];
          break;
        default: // 8: rotate 90 counter-clockwise
          [sx, sy] = [W - 1 - y, x];
      }
      const s = (sy * W + sx) * 3, d = (y * ow + x) * 3;
      out[d] = img.rgb[s];
      out[d + 1] = img.rgb[s + 1];
      out[d + 2] = img.rgb[s + 2];
    }
  }
  return { width: ow, height: oh, rgb: out };
}
