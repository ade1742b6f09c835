/**
 * The words of ShapesWorld captions (shapes, colours, sizes, positions, textures, backgrounds, glue words and
 * rare identifiers) and the tiny CLIP-style tokenizer built from them for the ShapesWorld base model: byte-level
 * BPE whose merges spell every word as one `word</w>` token, with the byte alphabet as a fallback so any text
 * still tokenizes (an unknown word becomes several character-level ids).
 *
 * @example
 * ```ts
 * const files = buildShapesWorldTokenizerFiles();
 * const tok = ClipTokenizer.fromVocabAndMerges(files.vocabJson, files.merges, { modelMaxLength: 32 });
 * tok.encode("a large red circle"); // four ids, one per word
 * ```
 */
import { BYTE_LEVEL_ALPHABET, byteLevelEncode } from "../tokenizer/byte_level.ts";
import { bpeWord, CLIP_BOS, CLIP_EOS, END_OF_WORD } from "../tokenizer/clip_tokenizer.ts";
import { clipTokenizerJson } from "../tokenizer/clip_tokenizer_json.ts";

/**
 * ShapesWorld's words by role, for caption generators and tests.
 *
 * @example
 * ```ts
 * SHAPESWORLD_CATEGORIES.colours[0]; // "red"
 * ```
 */
export const SHAPESWORLD_CATEGORIES = {
  shapes: [
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "diamond",
    "heart",
    "hexagon",
    "pentagon",
    "rectangle",
    "ellipse",
    "crescent",
    "arrow",
    "circles",
    "squares",
    "triangles",
    "stars",
    "crosses",
    "rings",
    "diamonds",
    "hearts",
    "hexagons",
    "pentagons",
    "rectangles",
    "ellipses",
    "crescents",
    "arrows",
    "shape",
    "shapes",
    "object",
    "objects",
  ],
  colours: [
    "red",
    "green",
    "blue",
    "yellow",
    "purple",
    "orange",
    "white",
    "black",
    "pink",
    "cyan",
    "brown",
    "gray",
    "grey",
    "colorful",
  ],
  sizes: ["tiny", "small", "medium", "large", "big", "huge", "bigger", "smaller", "size"],
  positions: [
    "left",
    "right",
    "top",
    "bottom",
    "center",
    "middle",
    "upper",
    "lower",
    "corner",
    "side",
    "above",
    "below",
    "near",
    "next",
    "beside",
    "between",
  ],
  textures: ["striped", "dotted", "checkered", "plain", "solid", "gradient", "outlined", "hollow", "filled"],
  backgrounds: ["background", "dark", "light", "bright", "noisy", "grid"],
  glue: [
    "a",
    "an",
    "the",
    "on",
    "in",
    "at",
    "of",
    "with",
    "and",
    "to",
    "is",
    "one",
    "two",
    "three",
    "photo",
    "image",
    "picture",
    "drawing",
    "painting",
    "render",
    "style",
    "far",
    "away",
    "very",
    "more",
    "less",
    "zoomed",
    "close",
    "up",
    "no",
  ],
  /** Rare identifiers that DreamBooth and Custom Diffusion bind new subjects to. */
  rare: ["sks", "ohwx", "zwx", "vkr", "ktn", "pll", "ucd"],
  punctuation: [",", "."],
} as const satisfies Record<string, readonly string[]>;

/**
 * Every ShapesWorld word once, in category order; each is a single token of the tiny tokenizer.
 *
 * @example
 * ```ts
 * SHAPESWORLD_WORDS.includes("checkered"); // true
 * ```
 */
export const SHAPESWORLD_WORDS: readonly string[] = [
  ...new Set(Object.values(SHAPESWORLD_CATEGORIES).flat()),
];

/**
 * Sequence length of the tiny text encoder. The longest caption the world plans for is about 28 tokens, e.g.
 * Custom Diffusion's "a far away " prefix on "a photo of a small red striped circle on the upper left and a
 * large blue dotted square on the lower right, green background"; with BOS and EOS that is 30, so 32.
 */
export const SHAPESWORLD_MAX_LENGTH = 32;

/** What {@link buildShapesWorldTokenizerFiles} returns: the contents of a diffusers `tokenizer/` folder. */
export interface ShapesWorldTokenizerFiles {
  /** `vocab.json`: 256 byte characters, the same with `</w>`, merge results, then BOS and EOS last. */
  vocabJson: Record<string, number>;
  /** `merges.txt` lines, without the `#version` header. */
  merges: string[];
  /** `tokenizer.json` (Hugging Face format). */
  tokenizerJson: Record<string, unknown>;
  /** `tokenizer_config.json`. */
  tokenizerConfig: Record<string, unknown>;
  /** `special_tokens_map.json`. */
  specialTokensMap: Record<string, unknown>;
}

/**
 * Builds the tiny tokenizer's files. Merges are found word by word: run BPE with the merges so far and, while
 * the word is still several symbols, append merges joining them left to right. Later merges rank after every
 * earlier one, so they never change how an earlier word tokenizes. Deterministic.
 *
 * @example
 * ```ts
 * const f = buildShapesWorldTokenizerFiles();
 * await Deno.writeTextFile("tokenizer/vocab.json", JSON.stringify(f.vocabJson));
 * await Deno.writeTextFile("tokenizer/merges.txt", "#version: 0.2\n" + f.merges.join("\n") + "\n");
 * ```
 */
export function buildShapesWorldTokenizerFiles(
  words: readonly string[] = SHAPESWORLD_WORDS,
): ShapesWorldTokenizerFiles {
  const ids = new Map<string, number>();
  const addToken = (token: string) => {
    if (!ids.has(token)) ids.set(token, ids.size);
  };
  for (const c of BYTE_LEVEL_ALPHABET) addToken(c);
  for (const c of BYTE_LEVEL_ALPHABET) addToken(c + END_OF_WORD);

  const ranks = new Map<string, number>();
  const merges: string[] = [];
  for (const word of words) {
    const chars = byteLevelEncode(word);
    for (let round = 0;; round++) {
      const symbols = bpeWord(chars, ranks);
      if (symbols.length === 1) break;
      if (round === chars.length) {
        throw new Error(`ShapesWorld tokenizer: no merges make "${word}" one token`);
      }
      let joined = symbols[0];
      for (const symbol of symbols.slice(1)) {
        const merge = `${joined} ${symbol}`;
        joined += symbol;
        if (ranks.has(merge)) continue;
        ranks.set(merge, merges.length);
        merges.push(merge);
        addToken(joined);
      }
    }
  }
  addToken(CLIP_BOS);
  addToken(CLIP_EOS);
  const vocab = Object.fromEntries(ids);

  const special = { bos_token: CLIP_BOS, eos_token: CLIP_EOS, unk_token: CLIP_EOS, pad_token: CLIP_EOS };
  return {
    vocabJson: vocab,
    merges,
    tokenizerJson: clipTokenizerJson(vocab, merges),
    tokenizerConfig: {
      tokenizer_class: "CLIPTokenizer",
      model_max_length: SHAPESWORLD_MAX_LENGTH,
      do_lower_case: true,
      add_prefix_space: false,
      clean_up_tokenization_spaces: true,
      errors: "replace",
      ...special,
    },
    specialTokensMap: { ...special },
  };
}
