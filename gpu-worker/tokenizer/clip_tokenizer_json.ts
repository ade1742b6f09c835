/**
 * Writes CLIP's byte-level BPE as a Hugging Face `tokenizer.json` (the layout `CLIPTokenizerFast` saves and
 * diffusers folders ship), for tokenizers we build ourselves (the tiny ShapesWorld model) and for tests.
 *
 * @example
 * ```ts
 * const json = clipTokenizerJson(vocab, merges);
 * await Deno.writeTextFile("tokenizer/tokenizer.json", JSON.stringify(json));
 * ```
 */
import { CLIP_BOS, CLIP_EOS, END_OF_WORD } from "./clip_tokenizer.ts";

/**
 * A `tokenizer.json` object with CLIP's normalizer, pre-tokenizer, BPE model (`</w>` suffix), BOS/EOS
 * post-processor and byte-level decoder; `vocab` must hold the BOS and EOS tokens.
 *
 * @example
 * ```ts
 * const json = clipTokenizerJson({ ...vocab }, ["a b", "ab c</w>"]);
 * ```
 */
export function clipTokenizerJson(
  vocab: Record<string, number>,
  merges: readonly string[],
  { bosToken = CLIP_BOS, eosToken = CLIP_EOS }: { bosToken?: string; eosToken?: string } = {},
): Record<string, unknown> {
  const special = (content: string) => {
    const id = vocab[content];
    if (id === undefined) throw new RangeError(`clipTokenizerJson: "${content}" is not in the vocabulary`);
    return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: true, special: true };
  };
  const bos = special(bosToken);
  const eos = special(eosToken);
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [bos, eos],
    normalizer: {
      type: "Sequence",
      normalizers: [
        { type: "NFC" },
        { type: "Replace", pattern: { Regex: "\\s+" }, content: " " },
        { type: "Lowercase" },
      ],
    },
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        {
          type: "Split",
          pattern: {
            Regex:
              "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+",
          },
          behavior: "Removed",
          invert: true,
        },
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: {
      type: "RobertaProcessing",
      sep: [eos.content, eos.id],
      cls: [bos.content, bos.id],
      trim_offsets: false,
      add_prefix_space: false,
    },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: eos.content,
      continuing_subword_prefix: "",
      end_of_word_suffix: END_OF_WORD,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: [...merges],
    },
  };
}
