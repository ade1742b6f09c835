/**
 * `GET /openapi.json` (generated from the zod schemas of `shared/`) and `GET /docs`, a self-contained page
 * that renders it (no CDN: the docs work offline), with the problem types the API answers with.
 */
import type { Hono } from "hono";
import { z } from "zod";
import type { EdgeEnv } from "../context.ts";
import { type OpenApi, route } from "../openapi.ts";

const PROBLEMS: [string, string][] = [
  ["unauthorized", "401: missing, malformed (bad checksum) or unknown API key"],
  ["not-found", "404: no such object for this tenant (another tenant's objects are not found either)"],
  ["invalid-request", "422: the body does not match the schema; invalid_fields names each field"],
  ["unknown-reference", "422: a file or adapter id in the body does not exist for this tenant"],
  ["unknown-base-model", "422: base_model is not served"],
  ["ambiguous-token", "422: a token in the prompt belongs to several adapters"],
  ["insufficient-credits", "402: the job costs more than the balance; no job was created"],
  ["idempotency-key-reused", "422: the Idempotency-Key was used with other parameters"],
  ["idempotency-key-in-use", "409: a request with this Idempotency-Key is still running"],
  ["rate-limited", "429: too many requests; see Retry-After and RateLimit"],
  [
    "busy",
    "503: too many concurrent changes to one account or job; nothing was done or charged, see Retry-After",
  ],
  ["too-large", "413: the body is larger than the limit"],
  ["too-many-pixels", "413: the image's header declares more pixels than allowed (it was not decoded)"],
  ["zip-too-large", "413: too many zip entries, or too many uncompressed bytes"],
  ["unsupported-media-type", "415: not a PNG/JPEG image, zip of images, or safetensors file"],
  ["invalid-image", "400: the image data is corrupt"],
  ["invalid-zip", "400: the zip cannot be read, or its captions do not match its images"],
  ["invalid-safetensors", "400: the safetensors header or offsets are invalid"],
  ["format-not-available", "422: the adapter cannot be converted to the requested weights format"],
  [
    "not-implemented",
    "501: workers for the base model are registered and none serves the training or merge method, or the " +
    "prediction features (sliders, regions, reference_image, img2img, inpainting) the request uses; nothing was charged. " +
    "With no worker registered for the model yet, the job is accepted and waits for one.",
  ],
  ["link-conflict", "409: the Discord guild/user or Slack team is linked to another account"],
  ["stale-lease", "409 (workers): the job was leased again or finished"],
  [
    "invalid-adapter-descriptor",
    "400 (workers): a training or merge completed without the descriptor of its adapter, or with another method",
  ],
];

const PAGE = (problems: string) =>
  `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>personalize API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:15px/1.5 system-ui,sans-serif;max-width:980px;margin:2rem auto;padding:0 1rem;color:#222}
h1{margin-bottom:.2rem} .op{border:1px solid #ddd;border-radius:6px;margin:.6rem 0;padding:.4rem .8rem}
.m{display:inline-block;min-width:4.5rem;font-weight:700;text-transform:uppercase;font-family:monospace}
.get{color:#0a7}.post{color:#06c}.put{color:#a60}.delete{color:#c22} code,pre{font-family:ui-monospace,monospace}
pre{background:#f6f6f6;padding:.5rem;overflow:auto;max-height:24rem;font-size:12px} summary{cursor:pointer}
</style></head><body>
<h1>personalize API</h1><p>Generated from <a href="/openapi.json">/openapi.json</a>. Authenticate with
<code>Authorization: Bearer pfd_…</code>. Errors are RFC 9457 <code>application/problem+json</code>.</p>
<div id="ops">Loading…</div>
<h2 id="problems">Problem types</h2><dl>${problems}</dl>
<script>
fetch("/openapi.json").then(r => r.json()).then(doc => {
  const esc = s => String(s).replace(/[&<>"]/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]));
  const out = [];
  for (const [path, ops] of Object.entries(doc.paths)) for (const [m, op] of Object.entries(ops)) {
    const body = op.requestBody ? Object.entries(op.requestBody.content)[0] : null;
    const res = Object.entries(op.responses).filter(([s]) => s !== "default");
    out.push('<div class="op"><details><summary><span class="m ' + m + '">' + m + '</span> <code>' + esc(path) +
      '</code> — ' + esc(op.summary) + '</summary>' + (op.description ? '<p>' + esc(op.description) + '</p>' : '') +
      (op.parameters.length ? '<p>Parameters: ' + op.parameters.map(p => '<code>' + esc(p.name) + '</code> (' + p.in + ')').join(', ') + '</p>' : '') +
      (body ? '<p>Body (' + esc(body[0]) + '):</p><pre>' + esc(JSON.stringify(body[1].schema, null, 2)) + '</pre>' : '') +
      res.map(([s, r]) => '<p>' + s + ': ' + esc(r.description) + '</p>' + (r.content && Object.values(r.content)[0].schema ?
        '<pre>' + esc(JSON.stringify(Object.values(r.content)[0].schema, null, 2)) + '</pre>' : '')).join('') +
      '</details></div>');
  }
  document.getElementById("ops").innerHTML = out.join("");
});
</script></body></html>`;

export function docsRoutes(app: Hono<EdgeEnv>, api: OpenApi): void {
  route(app, api, {
    method: "get",
    path: "/openapi.json",
    summary: "This document",
    tags: ["meta"],
    auth: "none",
    responses: { 200: { description: "OpenAPI 3.1", schema: z.record(z.string(), z.unknown()) } },
  }, (c) => c.json(api.document()));
  const problems = PROBLEMS.map(([slug, what]) =>
    `<dt id="problem-${slug}"><code>${slug}</code></dt><dd>${what}</dd>`
  ).join("");
  route(app, api, {
    method: "get",
    path: "/docs",
    summary: "API documentation (HTML)",
    tags: ["meta"],
    auth: "none",
    responses: { 200: { description: "HTML", contentType: "text/html" } },
  }, (c) => c.html(PAGE(problems)));
}
