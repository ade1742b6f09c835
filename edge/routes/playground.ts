/**
 * `GET /playground` (and `/`, which redirects there): the web playground, a page and its script served by the
 * edge with no build step (`edge/playground/`). Public like `/docs`: the page holds no data; everything it
 * shows comes from the API with the key the user pastes.
 */
import type { Hono } from "hono";
import type { EdgeEnv } from "../context.ts";
import { type OpenApi, route } from "../openapi.ts";
import { PLAYGROUND_CSP, PLAYGROUND_HTML } from "../playground/page.ts";
import { PLAYGROUND_JS } from "../playground/app_js.ts";

const SECURITY_HEADERS = {
  "Content-Security-Policy": PLAYGROUND_CSP,
  "X-Content-Type-Options": "nosniff",
  "Referrer-Policy": "no-referrer",
};

export function playgroundRoutes(app: Hono<EdgeEnv>, api: OpenApi): void {
  route(app, api, {
    method: "get",
    path: "/",
    summary: "Redirects to the playground",
    tags: ["meta"],
    auth: "none",
    responses: { 302: { description: "Location: /playground" } },
  }, (c) => c.redirect("/playground", 302));
  route(app, api, {
    method: "get",
    path: "/playground",
    summary: "Web playground (HTML): train, generate with adapters and sliders, slider grids",
    tags: ["meta"],
    auth: "none",
    responses: { 200: { description: "HTML", contentType: "text/html" } },
  }, (c) => c.html(PLAYGROUND_HTML, 200, SECURITY_HEADERS));
  route(app, api, {
    method: "get",
    path: "/playground/app.js",
    summary: "The playground's script",
    tags: ["meta"],
    auth: "none",
    responses: { 200: { description: "JavaScript", contentType: "text/javascript" } },
  }, (c) =>
    c.body(PLAYGROUND_JS, 200, {
      ...SECURITY_HEADERS,
      "Content-Type": "text/javascript; charset=utf-8",
      "Cache-Control": "no-cache",
    }));
}
