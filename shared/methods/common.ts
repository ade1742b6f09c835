/**
 * Pieces every method's schemas share: file references as the API takes them (file ids, or one zip id) and as
 * a worker leases them (blob names), tokens, adapter names, and the fields common to every training
 * (`steps`, `learning_rate`, `batch_size`, `resolution`, `seed`; API.md).
 *
 * @example
 * ```ts
 * const MyInput = z.object({ images: Images, ...COMMON_TRAINING_FIELDS, steps: COMMON_TRAINING_FIELDS.steps.default(100) });
 * const MyWork = MyInput.extend({ images: ImageNames, captions: Captions });
 * ```
 */
import { z } from "zod";

export const FileId = z.string().min(1).max(100);
/** Uploaded image file ids, or one zip file id (its images, with optional `.txt` captions). */
export const Images = z.union([FileId, z.array(FileId).min(1).max(200)]);
/** An adapter's name; a prompt naming `<name>` pulls the adapter in. */
export const AdapterName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, {
  message: "1-64 characters: letters, digits, _ . - (not first)",
});
/** A word the text encoder learns (a DreamBooth identifier, a Custom Diffusion modifier token). */
export const Token = z.string().min(1).max(64).regex(/^\S+$/, { message: "a token is one word" });
export const ClassWord = z.string().max(100);

/** The fields every training takes; a method sets its own `steps` default. */
export const COMMON_TRAINING_FIELDS = {
  steps: z.number().int().min(1).max(100_000),
  learning_rate: z.number().positive().max(1).optional(),
  batch_size: z.number().int().min(1).max(64).default(1),
  resolution: z.number().int().min(8).max(2048).optional(),
  seed: z.number().int().min(0).max(2 ** 53 - 1).optional(),
};

/**
 * A name in a leased job's `blobs`: an image file's id, `<zip id>/<entry>` for an image of an uploaded zip,
 * or an adapter's id.
 */
export const BlobName = z.string().min(1).max(400);
/** Images as a worker leases them: blob names (a zip's entries each by its own name). */
export const ImageNames = z.array(BlobName).min(1).max(1000);
/** Captions of images by blob name (the edge takes them from the `.txt` entries of uploaded zips). */
export const Captions = z.record(z.string(), z.string()).default({});

/** What every leased training input carries besides the method's fields. */
export const TRAINING_WORK_FIELDS = {
  images: ImageNames,
  captions: Captions,
  /** The adapter's name (the training's `destination`). */
  destination: AdapterName.optional(),
};
