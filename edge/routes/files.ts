/**
 * `/v1/files`: uploads (multipart `content`, + `filename`, `metadata`), checked by content and stored
 * content-addressed (`uploads/ingest.ts`), and their records and bytes.
 */
import type { Hono } from "hono";
import { FileObject, UploadForm } from "../../shared/files.ts";
import { JobList } from "../../shared/jobs.ts";
import { readBody } from "../body.ts";
import { contentDisposition } from "../content_disposition.ts";
import { type Edge, type EdgeContext, type EdgeEnv, newId, originOf, param } from "../context.ts";
import { type OpenApi, route } from "../openapi.ts";
import { ApiProblem } from "../problem.ts";
import { type FileRecord, ownedFile, presentFile } from "../records.ts";
import { ingestUpload } from "../uploads/ingest.ts";

const FORM_OVERHEAD = 256 * 1024;
const EXTENSIONS: Record<string, string> = {
  "image/png": "png",
  "application/zip": "zip",
  "application/vnd.safetensors": "safetensors",
};

/** A multipart form of at most `limit` bytes of files (415 for another content type, 400 when unreadable). */
export async function readMultipart(c: EdgeContext, limit: number, expected: string): Promise<FormData> {
  const type = c.req.header("content-type") ?? "";
  if (!/^multipart\/form-data\b/i.test(type)) {
    throw new ApiProblem(
      415,
      "unsupported-media-type",
      "Unsupported Media Type",
      `expected multipart/form-data ${expected}, got "${type}"`,
    );
  }
  const raw = c.get("rawBody") ?? await readBody(c.req.raw, limit + FORM_OVERHEAD);
  try {
    return await new Request("http://upload/", {
      method: "POST",
      headers: { "content-type": type },
      body: raw,
    }).formData();
  } catch (e) {
    throw new ApiProblem(
      400,
      "malformed-body",
      "Malformed body",
      `not a readable multipart form: ${(e as Error).message}`,
    );
  }
}

/** Checks an upload by content (`uploads/ingest.ts`), stores its bytes and its record; returns the record. */
export async function storeUpload(
  edge: Edge,
  tenant: string,
  bytes: Uint8Array,
  filename: string | null,
  metadata: Record<string, unknown> = {},
): Promise<FileRecord> {
  const up = ingestUpload(bytes, filename, edge.uploadLimits);
  const ref = await edge.blobs.put(up.bytes);
  const rec: FileRecord = {
    id: newId("file"),
    tenant,
    kind: up.kind,
    content_type: up.contentType,
    size: ref.size,
    sha256: ref.sha256,
    filename,
    metadata,
    created_at: new Date(edge.now()).toISOString(),
  };
  if (up.kind === "image") Object.assign(rec, { width: up.width, height: up.height });
  if (up.kind === "safetensors") rec.tensors = up.tensors;
  if (up.kind === "zip") {
    rec.entries = [];
    for (const img of up.images) {
      const r = await edge.blobs.put(img.png);
      rec.entries.push({
        name: img.name,
        width: img.width,
        height: img.height,
        sha256: r.sha256,
        size: r.size,
        ...(img.caption !== undefined ? { caption: img.caption } : {}),
      });
    }
  }
  await edge.metadata.set(["files", tenant, rec.id], rec);
  return rec;
}

export function fileRoutes(app: Hono<EdgeEnv>, api: OpenApi): void {
  const tags = ["files"];
  route(app, api, {
    method: "post",
    path: "/v1/files",
    summary: "Upload an image, a zip of images (+ .txt captions) or a safetensors adapter",
    description:
      "Judged by content, not name: PNG/JPEG (re-encoded to PNG; WebP is refused with 415: no decoder), zip (each entry checked the same way, rebuilt), safetensors (parsed without pickle). Byte, pixel and zip limits answer 413 before anything is decoded.",
    tags,
    auth: "api_key",
    body: { schema: UploadForm, contentType: "multipart/form-data" },
    responses: { 201: { description: "Stored", schema: FileObject } },
  }, async (c) => {
    const edge = c.get("edge");
    const tenant = c.get("tenant");
    const limit = edge.uploadLimits.maxBytes;
    const form = await readMultipart(c, limit, 'with a "content" file');
    const content = form.get("content");
    if (!(content instanceof File)) {
      throw new ApiProblem(
        422,
        "invalid-request",
        "Invalid request",
        'the form needs a file field "content"',
        {
          invalid_fields: [{ name: "content", reason: "a file is required" }],
        },
      );
    }
    if (content.size > limit) {
      throw new ApiProblem(
        413,
        "too-large",
        "Content Too Large",
        `the file is ${content.size} bytes; the limit is ${limit}`,
      );
    }
    const filenameField = form.get("filename");
    const filename = (typeof filenameField === "string" && filenameField) || content.name || null;
    let metadata: Record<string, unknown> = {};
    const metaField = form.get("metadata");
    if (typeof metaField === "string" && metaField) {
      try {
        metadata = JSON.parse(metaField);
      } catch { /* checked below */ }
      if (!metadata || typeof metadata !== "object" || Array.isArray(metadata) || metaField.length > 10_000) {
        throw new ApiProblem(
          422,
          "invalid-request",
          "Invalid request",
          "metadata must be a JSON object of at most 10000 characters",
          {
            invalid_fields: [{ name: "metadata", reason: "a JSON object" }],
          },
        );
      }
    }
    const rec = await storeUpload(
      edge,
      tenant.id,
      new Uint8Array(await content.arrayBuffer()),
      filename,
      metadata,
    );
    const body = presentFile(rec, originOf(c));
    return c.json(body, 201, { Location: body.urls.get });
  });

  route(app, api, {
    method: "get",
    path: "/v1/files",
    summary: "List files",
    tags,
    auth: "api_key",
    query: { cursor: { description: "from a previous page's next" } },
    responses: { 200: { description: "Files, oldest first", schema: JobList(FileObject) } },
  }, async (c) => {
    const edge = c.get("edge");
    const page = await edge.metadata.list<FileRecord>(["files", c.get("tenant").id], {
      cursor: c.req.query("cursor"),
    });
    return c.json({ data: page.items.map((i) => presentFile(i.value, originOf(c))), next: page.next });
  });

  route(
    app,
    api,
    {
      method: "get",
      path: "/v1/files/:id",
      summary: "Get a file's record",
      tags,
      auth: "api_key",
      responses: { 200: { description: "The file", schema: FileObject } },
    },
    async (c) =>
      c.json(presentFile(await ownedFile(c.get("edge"), c.get("tenant").id, param(c, "id")), originOf(c))),
  );

  route(app, api, {
    method: "get",
    path: "/v1/files/:id/content",
    summary: "Download a file's (re-encoded) bytes",
    description:
      'Content-Disposition: inline with the stored filename (RFC 6266; filename* in UTF-8 for non-ASCII names), or "<id>.<extension>" when it has none.',
    tags,
    auth: "api_key",
    responses: { 200: { description: "The bytes", contentType: "application/octet-stream" } },
  }, async (c) => {
    const edge = c.get("edge");
    const f = await ownedFile(edge, c.get("tenant").id, param(c, "id"));
    const etag = `"${f.sha256}"`;
    if (c.req.header("if-none-match") === etag) return c.body(null, 304);
    const bytes = await edge.blobs.get(f.sha256);
    if (!bytes) throw new ApiProblem(410, "gone", "Gone", `the bytes of file ${f.id} are no longer stored`);
    return c.body(bytes as Uint8Array<ArrayBuffer>, 200, {
      "content-type": f.content_type,
      "content-length": String(bytes.byteLength),
      etag,
      "content-disposition": contentDisposition(
        "inline",
        f.filename,
        `${f.id}.${EXTENSIONS[f.content_type] ?? "bin"}`,
      ),
      "cache-control": "private, max-age=31536000, immutable",
    });
  });

  route(app, api, {
    method: "delete",
    path: "/v1/files/:id",
    summary: "Delete a file",
    description: "The record goes at once; content-addressed bytes still used by jobs or other files stay.",
    tags,
    auth: "api_key",
    responses: { 204: { description: "Deleted" } },
  }, async (c) => {
    const edge = c.get("edge");
    const f = await ownedFile(edge, c.get("tenant").id, param(c, "id"));
    await edge.metadata.delete(["files", f.tenant, f.id]);
    return c.body(null, 204);
  });
}
