/**
 * What `POST /v1/files` accepts, checked by content: an image (PNG/JPEG; WebP recognized, refused), a zip of
 * images with optional `.txt` captions, or a safetensors adapter (parsed without pickle, every offset
 * checked). Images are re-encoded; zips are rebuilt from their checked entries. Pixel, entry and size limits
 * are applied from headers and the zip's directory before anything is decoded or inflated.
 *
 * @example
 * ```ts
 * const up = ingestUpload(bytes, "rex.zip", DEFAULT_UPLOAD_LIMITS);
 * up.kind; // "zip"
 * ```
 */
import { unzipSync, zipSync } from "fflate";
import { readSafetensors, SafetensorsError } from "../../gpu-worker/models/safetensors.ts";
import { ApiProblem } from "../problem.ts";
import { reencodeAsPng } from "./image.ts";
import { imageFormat, sniffImage } from "./image_header.ts";

export interface UploadLimits {
  /** Bytes of the request body (counted as they stream). */
  maxBytes: number;
  /** Pixels of one image (width x height), checked from its header. */
  maxPixels: number;
  maxZipEntries: number;
  /** Sum of the zip entries' uncompressed sizes. */
  maxZipBytes: number;
  maxCaptionChars: number;
}

export const DEFAULT_UPLOAD_LIMITS: UploadLimits = {
  maxBytes: 64 * 2 ** 20,
  maxPixels: 4096 * 4096,
  maxZipEntries: 200,
  maxZipBytes: 256 * 2 ** 20,
  maxCaptionChars: 1000,
};

export interface IngestedImage {
  name: string;
  png: Uint8Array;
  width: number;
  height: number;
  caption?: string;
}

export type Ingested =
  | { kind: "image"; bytes: Uint8Array; contentType: "image/png"; width: number; height: number }
  | { kind: "zip"; bytes: Uint8Array; contentType: "application/zip"; images: IngestedImage[] }
  | { kind: "safetensors"; bytes: Uint8Array; contentType: "application/vnd.safetensors"; tensors: number };

const refuse = (status: number, slug: string, title: string, detail: string) =>
  new ApiProblem(status, slug, title, detail, { invalid_fields: [{ name: "content", reason: detail }] });

function isZip(b: Uint8Array): boolean {
  return b.length >= 4 && b[0] === 0x50 && b[1] === 0x4b && (b[2] === 3 || b[2] === 5) &&
    (b[3] === 4 || b[3] === 6);
}

function looksLikeSafetensors(b: Uint8Array): boolean {
  if (b.length < 10) return false;
  const n = new DataView(b.buffer, b.byteOffset, b.byteLength).getBigUint64(0, true);
  return n > 1n && n < BigInt(b.length) && b[8] === 0x7b; // "{"
}

/** One image: magic, header, pixel limit, then decode and re-encode. */
export function ingestImage(bytes: Uint8Array, name: string, limits: UploadLimits): IngestedImage {
  let header;
  try {
    header = sniffImage(bytes);
  } catch (e) {
    throw refuse(400, "invalid-image", "Invalid image", `${name}: ${(e as Error).message}`);
  }
  const pixels = header.width * header.height;
  if (pixels > limits.maxPixels) {
    throw refuse(
      413,
      "too-many-pixels",
      "Image too large",
      `${name}: ${header.width} x ${header.height} pixels (${pixels}) exceeds the limit of ${limits.maxPixels} pixels; it was not decoded`,
    );
  }
  try {
    const { png, width, height } = reencodeAsPng(bytes, header);
    return { name, png, width, height };
  } catch (e) {
    throw refuse(400, "invalid-image", "Invalid image", `${name}: ${(e as Error).message}`);
  }
}

const SKIPPED = (name: string) =>
  name.endsWith("/") || name.startsWith("__MACOSX/") || /(^|\/)(\.DS_Store|\._[^/]*|Thumbs\.db)$/.test(name);

/** An entry's path with `/` separators; `..`, absolute and drive paths are refused (names are keys, not paths). */
function entryPath(path: string): string {
  const p = path.replace(/\\/g, "/").replace(/^(\.\/)+/, "");
  if (p.startsWith("/") || /^[A-Za-z]:/.test(p) || p.split("/").some((s) => s === ".." || s === "")) {
    throw refuse(400, "invalid-zip", "Invalid zip", `${path}: entry paths must be relative, without ".."`);
  }
  return p;
}

/** `dir/` when every entry lies under the one folder `dir` (a zipped folder), else "". */
function commonTopFolder(paths: string[]): string {
  const tops = new Set(paths.map((p) => {
    const e = entryPath(p);
    return e.includes("/") ? e.slice(0, e.indexOf("/") + 1) : "";
  }));
  const [only] = tops;
  return tops.size === 1 ? only : "";
}

/**
 * The images of a zip, re-encoded, sorted by name. Names keep the entry's folders below a single common top
 * folder (`rex/01.jpg` -> `01.png`, `slider/low/a.png` -> `low/a.png`), so folders such as a visual slider's
 * `low/` and `high/` can hold images of the same file name; a caption is the `.txt` of the same path.
 */
export function ingestZip(bytes: Uint8Array, limits: UploadLimits): IngestedImage[] {
  let entries = 0, total = 0;
  let files: Record<string, Uint8Array>;
  try {
    files = unzipSync(bytes, {
      filter: (f) => {
        if (SKIPPED(f.name)) return false;
        if (++entries > limits.maxZipEntries) {
          throw refuse(413, "zip-too-large", "Zip too large", `more than ${limits.maxZipEntries} entries`);
        }
        total += f.originalSize;
        if (total > limits.maxZipBytes) {
          throw refuse(
            413,
            "zip-too-large",
            "Zip too large",
            `the entries add up to more than ${limits.maxZipBytes} bytes uncompressed`,
          );
        }
        return true; // fflate inflates into a buffer of the declared size: a lying entry cannot grow past it
      },
    });
  } catch (e) {
    if (e instanceof ApiProblem) throw e;
    throw refuse(400, "invalid-zip", "Invalid zip", `the zip cannot be read: ${(e as Error).message}`);
  }
  const images = new Map<string, IngestedImage>();
  const captions = new Map<string, string>();
  const top = commonTopFolder(Object.keys(files));
  for (const [path, data] of Object.entries(files)) {
    const rel = entryPath(path).slice(top.length);
    const base = rel.slice(rel.lastIndexOf("/") + 1);
    const stem = rel.slice(0, rel.length - base.length) + base.replace(/\.[^.]*$/, "");
    if (/\.txt$/i.test(base)) {
      let text: string;
      try {
        text = new TextDecoder("utf-8", { fatal: true }).decode(data).trim();
      } catch {
        throw refuse(400, "invalid-zip", "Invalid zip", `${path}: a caption must be UTF-8 text`);
      }
      if (text.length > limits.maxCaptionChars) {
        throw refuse(
          413,
          "zip-too-large",
          "Zip too large",
          `${path}: caption longer than ${limits.maxCaptionChars} characters`,
        );
      }
      captions.set(stem, text);
      continue;
    }
    if (!imageFormat(data)) {
      throw refuse(
        415,
        "unsupported-zip-entry",
        "Unsupported zip entry",
        `${path}: neither an image (PNG, JPEG) nor a .txt caption`,
      );
    }
    if (images.has(stem)) {
      throw refuse(400, "invalid-zip", "Invalid zip", `two images are named "${stem}" (${path})`);
    }
    images.set(stem, ingestImage(data, path, limits));
  }
  if (!images.size) throw refuse(400, "invalid-zip", "Invalid zip", "the zip holds no images");
  for (const stem of captions.keys()) {
    if (!images.has(stem)) {
      throw refuse(400, "invalid-zip", "Invalid zip", `caption ${stem}.txt has no image ${stem}.*`);
    }
  }
  return [...images].sort(([a], [b]) => a < b ? -1 : 1).map(([stem, img]) => ({
    ...img,
    name: `${stem}.png`,
    ...(captions.has(stem) ? { caption: captions.get(stem) } : {}),
  }));
}

/** Classifies by content and checks the upload; throws ApiProblem (400/413/415) with a clear detail. */
export function ingestUpload(bytes: Uint8Array, filename: string | null, limits: UploadLimits): Ingested {
  const name = filename ?? "upload";
  if (imageFormat(bytes)) {
    const img = ingestImage(bytes, name, limits);
    return { kind: "image", bytes: img.png, contentType: "image/png", width: img.width, height: img.height };
  }
  if (isZip(bytes)) {
    const images = ingestZip(bytes, limits);
    const tree: Record<string, [Uint8Array, { level: 0 | 6 }]> = {};
    for (const img of images) {
      tree[img.name] = [img.png, { level: 0 }];
      if (img.caption !== undefined) {
        tree[img.name.replace(/\.png$/, ".txt")] = [new TextEncoder().encode(img.caption), { level: 6 }];
      }
    }
    return {
      kind: "zip",
      bytes: zipSync(tree, { mtime: new Date("2000-01-01T00:00:00Z") }),
      contentType: "application/zip",
      images,
    };
  }
  if (looksLikeSafetensors(bytes)) {
    try {
      const f = readSafetensors(bytes, name);
      if (!f.tensors.size) throw new SafetensorsError(`${name}: holds no tensors`);
      return {
        kind: "safetensors",
        bytes,
        contentType: "application/vnd.safetensors",
        tensors: f.tensors.size,
      };
    } catch (e) {
      throw refuse(400, "invalid-safetensors", "Invalid safetensors", (e as Error).message);
    }
  }
  if (/\.(safetensors|st)$/i.test(name)) {
    throw refuse(
      400,
      "invalid-safetensors",
      "Invalid safetensors",
      `${name}: no safetensors header (8-byte length, then a JSON object)`,
    );
  }
  throw refuse(
    415,
    "unsupported-media-type",
    "Unsupported Media Type",
    `${name}: not a PNG, JPEG or WebP image, a zip of images, or a safetensors file (judged by its bytes; pickle and other formats are refused)`,
  );
}
