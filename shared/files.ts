/**
 * Uploaded files (`POST /v1/files`): images (re-encoded to PNG), zips of images with optional `.txt`
 * captions (rebuilt from the checked entries), and safetensors adapters. Stored content-addressed.
 *
 * @example
 * ```ts
 * FileKind.parse("image");
 * ```
 */
import { z } from "zod";

export const FileKind = z.enum(["image", "zip", "safetensors"]);
export type FileKind = z.infer<typeof FileKind>;

export const ZipEntry = z.object({
  name: z.string(),
  width: z.number().int(),
  height: z.number().int(),
  sha256: z.string(),
  caption: z.string().optional(),
});
export type ZipEntry = z.infer<typeof ZipEntry>;

export const FileObject = z.object({
  id: z.string(),
  kind: FileKind,
  content_type: z.string(),
  size: z.number().int().nonnegative(),
  filename: z.string().nullable(),
  metadata: z.record(z.string(), z.unknown()),
  checksums: z.object({ sha256: z.string() }),
  /** Images: pixel size after re-encoding. */
  width: z.number().int().optional(),
  height: z.number().int().optional(),
  /** Zips: the images inside, with captions. */
  entries: z.array(ZipEntry).optional(),
  /** Safetensors: tensor count. */
  tensors: z.number().int().optional(),
  created_at: z.string(),
  urls: z.object({ get: z.string(), content: z.string() }),
});
export type FileObject = z.infer<typeof FileObject>;

/** The multipart form of `POST /v1/files` (documented; parsed by hand to count bytes as they stream). */
export const UploadForm = z.object({
  content: z.string().describe("the file (binary)"),
  filename: z.string().max(255).optional(),
  metadata: z.string().max(10_000).optional().describe("a JSON object kept with the file"),
});
