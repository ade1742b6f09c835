/**
 * GPT-2/CLIP byte-level alphabet: every byte 0..255 gets one printable Unicode character, so byte-level BPE
 * vocabularies (vocab.json, merges.txt) can spell any UTF-8 text without whitespace or control characters.
 * Printable Latin-1 bytes ("!".."~", "¡".."¬", "®".."ÿ") stand for themselves; the other 68 bytes take the
 * code points 256, 257, ... in byte order (so a space is "Ġ", U+0120).
 *
 * @example
 * ```ts
 * BYTE_TO_UNICODE[0x20]; // "Ġ"
 * byteLevelEncode("é"); // "Ã©" (bytes C3 A9)
 * ```
 */

function buildByteToUnicode(): string[] {
  const out = new Array<string>(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    out[b] = String.fromCharCode(printable ? b : 256 + extra++);
  }
  return out;
}

/**
 * The character each byte maps to, indexed by byte.
 *
 * @example
 * ```ts
 * BYTE_TO_UNICODE[0x61]; // "a"
 * ```
 */
export const BYTE_TO_UNICODE: readonly string[] = buildByteToUnicode();

/**
 * The byte-level alphabet in CLIP's vocabulary order (printable bytes first, then the remapped ones), which is
 * the order of ids 0..255 in CLIP's vocab.json.
 *
 * @example
 * ```ts
 * BYTE_LEVEL_ALPHABET[0]; // "!"
 * BYTE_LEVEL_ALPHABET.length; // 256
 * ```
 */
export const BYTE_LEVEL_ALPHABET: readonly string[] = [...BYTE_TO_UNICODE].sort((a, b) =>
  a.charCodeAt(0) - b.charCodeAt(0)
);

const UNICODE_TO_BYTE = new Map<string, number>(BYTE_TO_UNICODE.map((c, b) => [c, b]));
const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: false });

/**
 * UTF-8 encodes `text` and spells each byte with its byte-level character.
 *
 * @example
 * ```ts
 * byteLevelEncode("a b"); // "aĠb"
 * ```
 */
export function byteLevelEncode(text: string): string {
  let out = "";
  for (const b of utf8.encode(text)) out += BYTE_TO_UNICODE[b];
  return out;
}

/**
 * Inverse of {@link byteLevelEncode}; characters outside the alphabet are dropped, invalid UTF-8 becomes U+FFFD.
 *
 * @example
 * ```ts
 * byteLevelDecode("aĠb"); // "a b"
 * ```
 */
export function byteLevelDecode(chars: string): string {
  const bytes: number[] = [];
  for (const c of chars) {
    const b = UNICODE_TO_BYTE.get(c);
    if (b !== undefined) bytes.push(b);
  }
  return utf8Decoder.decode(new Uint8Array(bytes));
}
