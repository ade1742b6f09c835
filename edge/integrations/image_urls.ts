/**
 * Image URLs for places that cannot send an API key: Slack shows an image only from a URL it fetches
 * itself. The URL is the output file's (as `/v1/images/generations` with `response_format: "url"` makes them,
 * from the request's origin) under `/v1/integrations/images/`, with an expiry and an HMAC-SHA256 over
 * tenant, file and expiry, keyed with a secret this server makes on first use and keeps in the metadata
 * store. Anyone with the URL sees that one image until it expires; nothing else is reachable with it.
 *
 * @example
 * ```ts
 * const url = await signedImageUrl(edge, "https://api.example", "tnt_1", "file_abc");
 * // https://api.example/v1/integrations/images/tnt_1/file_abc?expires=1700604800&signature=...
 * await checkImageSignature(edge, "tnt_1", "file_abc", "1700604800", "..."); // true while not expired
 * ```
 */
import { timingSafeEqual } from "../auth/api_keys.ts";
import type { Edge } from "../context.ts";
import { toHex } from "./request_signature.ts";

/** How long a signed image URL works. */
export const IMAGE_URL_TTL_S = 7 * 24 * 3600;
const SECRET_KEY = ["integration_secrets", "image_urls"] as const;

async function secret(edge: Edge): Promise<string> {
  const found = await edge.metadata.get<string>(SECRET_KEY);
  if (found) return found;
  await edge.metadata.create(SECRET_KEY, toHex(crypto.getRandomValues(new Uint8Array(32))));
  return (await edge.metadata.get<string>(SECRET_KEY))!;
}

async function signature(edge: Edge, tenant: string, file: string, expires: string): Promise<string> {
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(await secret(edge)),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const mac = await crypto.subtle.sign(
    "HMAC",
    key,
    new TextEncoder().encode(`${tenant}\n${file}\n${expires}`),
  );
  return toHex(new Uint8Array(mac));
}

/** A URL that serves the tenant's file without a key until `ttlS` seconds from now. */
export async function signedImageUrl(
  edge: Edge,
  origin: string,
  tenant: string,
  file: string,
  ttlS = IMAGE_URL_TTL_S,
): Promise<string> {
  const expires = String(Math.floor(edge.now() / 1000) + ttlS);
  const sig = await signature(edge, tenant, file, expires);
  return `${origin}/v1/integrations/images/${tenant}/${file}?expires=${expires}&signature=${sig}`;
}

/** True when `sig` is this server's for the tenant, file and expiry, and the expiry has not passed. */
export async function checkImageSignature(
  edge: Edge,
  tenant: string,
  file: string,
  expires: string | undefined,
  sig: string | undefined,
): Promise<boolean> {
  if (!expires || !sig || !/^\d{1,12}$/.test(expires) || Number(expires) * 1000 < edge.now()) return false;
  return timingSafeEqual(sig, await signature(edge, tenant, file, expires));
}
