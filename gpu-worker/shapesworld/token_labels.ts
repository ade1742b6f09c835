/**
 * Per-token attribute labels of a ShapesWorld caption, for the text-encoder probes of pretraining
 * (`DiffusionTrainingOptions.textProbes`): each position from an object's colour word on is labelled with that
 * colour (and from its shape word on with that shape). A caption of one object labels every later position,
 * the background words, EOS and the padding included: causal attention lets each of them see the object, and
 * the UNet reads them all. With two objects a label stops at the end of its object's phrase ("and" or the
 * comma before the background), since the later positions see both.
 *
 * @example
 * ```ts
 * const { colour } = attributeTokenLabels("a red circle, blue background", folder.tokenizer, 32);
 * colour[2]; // COLOURS.indexOf("red") (position 0 is BOS, 1 is "a")
 * ```
 */
import type { ClipTokenizer } from "../tokenizer/clip_tokenizer.ts";
import { COLOURS, SHAPES } from "./world.ts";

/** Class indices into {@link COLOURS} and {@link SHAPES} per token position, -1 where unlabelled. */
export interface TokenLabels {
  colour: Int32Array;
  shape: Int32Array;
}

function singleTokenIds(tok: ClipTokenizer, words: readonly string[]): Map<number, number> {
  const m = new Map<number, number>();
  words.forEach((w, i) => {
    const ids = tok.encode(w);
    if (ids.length !== 1) {
      throw new RangeError(`token labels: "${w}" is ${ids.length} tokens in this tokenizer, expected 1`);
    }
    m.set(ids[0], i);
  });
  return m;
}

/** Labels of `caption` at the `length` positions the tokenizer pads it to (BOS at 0). */
export function attributeTokenLabels(caption: string, tok: ClipTokenizer, length: number): TokenLabels {
  const colourIds = singleTokenIds(tok, COLOURS), shapeIds = singleTokenIds(tok, SHAPES);
  const [and] = tok.encode("and"), [comma] = tok.encode(","), [background] = tok.encode("background");
  const ids = tok.call([caption], { maxLength: length, padding: "max_length", truncation: true }).inputIds[0];
  const colour = new Int32Array(length).fill(-1), shape = new Int32Array(length).fill(-1);
  const eos = ids.indexOf(tok.eosTokenId, 1);
  const end = eos === -1 ? length : eos;
  // Object phrases: [start, stop) spans of the caption before the background's comma, split at "and".
  const spans: [number, number][] = [];
  let start = 1;
  for (let p = 1; p <= end; p++) {
    if (p === end || ids[p] === and || ids[p] === comma) {
      if (p > start) spans.push([start, p]);
      start = p + 1;
      if (p === end || ids[p] === comma) break;
    }
  }
  for (const [a, b] of spans) {
    const stop = spans.length === 1 ? length : b;
    for (const [labels, known] of [[colour, colourIds], [shape, shapeIds]] as const) {
      // A colour right before "background" names the background, not an object.
      const at = ids.slice(a, b).findIndex((id, k) => known.has(id) && ids[a + k + 1] !== background);
      if (at !== -1) labels.fill(known.get(ids[a + at])!, a + at, stop);
    }
  }
  return { colour, shape };
}
