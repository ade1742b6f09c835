/**
 * `Content-Disposition` (RFC 6266) for a stored file's name. The name is cleaned first (no directories,
 * control or bidi-override characters, at most 200 characters); `filename` carries a plain-ASCII stand-in
 * (accents dropped, other non-ASCII, `"`, `\` and `%` as `_`), and when that differs from the name,
 * `filename*` carries the name itself in UTF-8 (RFC 8187), which current clients prefer.
 *
 * @example
 * ```ts
 * contentDisposition("inline", "Portrait été.png", "file_1.png");
 * // inline; filename="Portrait ete.png"; filename*=UTF-8''Portrait%20%C3%A9t%C3%A9.png
 * ```
 */

const BIDI_CONTROLS = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
const MAX_CHARS = 200;

/** The last path segment, without control or bidi characters; "" when nothing usable is left. */
export function cleanFilename(name: string | null | undefined): string {
  if (!name) return "";
  let n = name.split(/[/\\]/).pop()!.replace(/\p{Cc}/gu, "").replace(BIDI_CONTROLS, "").trim();
  if (/^\.*$/.test(n)) return "";
  const chars = [...n];
  if (chars.length > MAX_CHARS) {
    const ext = /\.[^.]{1,16}$/.exec(n)?.[0] ?? "";
    n = chars.slice(0, MAX_CHARS - ext.length).join("") + ext;
  }
  return n;
}

/** Printable ASCII only, and nothing a quoted-string or a percent-decoding client would misread. */
function asciiStandIn(name: string): string {
  return name.normalize("NFKD").replace(/\p{M}/gu, "").replace(/[^\x20-\x7e]|["\\%]/gu, "_");
}

/** RFC 8187 value-chars: attr-chars as they are, every other UTF-8 byte as %XX. */
function encodeExtValue(name: string): string {
  let out = "";
  for (const b of new TextEncoder().encode(name)) {
    const ch = String.fromCharCode(b);
    out += /[A-Za-z0-9!#$&+\-.^_`|~]/.test(ch) ? ch : `%${b.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

export function contentDisposition(
  type: "inline" | "attachment",
  name: string | null | undefined,
  fallback: string,
): string {
  const clean = cleanFilename(name) || cleanFilename(fallback) || "download";
  const ascii = asciiStandIn(clean);
  return ascii === clean
    ? `${type}; filename="${ascii}"`
    : `${type}; filename="${ascii}"; filename*=UTF-8''${encodeExtValue(clean)}`;
}
