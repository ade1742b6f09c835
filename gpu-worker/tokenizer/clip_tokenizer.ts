/**
 * The CLIP tokenizer of Stable Diffusion-family model folders (`tokenizer/`, `tokenizer_2/`): byte-level BPE
 * as in OpenAI CLIP's simple_tokenizer, loaded from `vocab.json` + `merges.txt` or from a Hugging Face
 * `tokenizer.json`, with SD's fixed-length batches (BOS ... EOS, truncated and padded to 77) and added tokens
 * for the new identifiers that Textual Inversion, Custom Diffusion and CIDM put in prompts (`<new1>`).
 *
 * Text is cleaned without ftfy (NFC, whitespace runs to one space, strip), lowercased, split by CLIP's
 * pre-tokenizer regex, spelled in the byte-level alphabet with `</w>` on each word's last character, and
 * merged by merge rank.
 *
 * @example
 * ```ts
 * const tok = await ClipTokenizer.fromModelFolder("models/sd15");
 * tok.encode("a photo of a cat"); // [320, 1125, 539, 320, 2368]
 * const { inputIds, attentionMask } = tok.call(["a photo of a cat"]); // each row 77 long
 * const [id] = tok.addTokens(["<new1>"]); // 49408
 * ```
 */
import { join } from "node:path";
import { byteLevelDecode, byteLevelEncode } from "./byte_level.ts";
import { pathExists as exists } from "../fs.ts";

/** Suffix that marks a word's last symbol in CLIP's BPE. */
export const END_OF_WORD = "</w>";
/** CLIP's begin-of-text token. */
export const CLIP_BOS = "<|startoftext|>";
/** CLIP's end-of-text token (also the SD1 pad token). */
export const CLIP_EOS = "<|endoftext|>";
/** Sequence length of every CLIP text encoder in SD1/SD2/SDXL. */
export const CLIP_MODEL_MAX_LENGTH = 77;

// Python's str.isspace() set, which the reference `re.sub(r"\s+", " ", text)` collapses; JS's \s differs
// (it lacks \x1c-\x1f and \x85, and adds \ufeff).
const WS = "\\t\\n\\v\\f\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const WHITESPACE_RUN = new RegExp(`[${WS}]+`, "gu");
const PRE_TOKENIZER = new RegExp(
  `<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^${WS}\\p{L}\\p{N}]+`,
  "giu",
);
const MAX_CACHE = 100_000;
/** model_max_length above this is transformers' "no limit" sentinel (1e30), not a length. */
const NO_LIMIT = 1_000_000;

/** Special-token names and lengths; every field falls back to CLIP's. */
export interface ClipTokenizerOptions {
  /** Default `maxLength` of {@link ClipTokenizer.call}; 77 when absent. */
  modelMaxLength?: number;
  bosToken?: string;
  eosToken?: string;
  /** Defaults to the EOS token (SD1); SD2's `tokenizer_2`-style folders use "!" (id 0). */
  padToken?: string;
  /** Used for a BPE symbol missing from the vocab; defaults to the EOS token. */
  unkToken?: string;
  /** Added tokens already in the files (content -> id), matched whole before BPE. */
  addedTokens?: Record<string, number>;
}

/** Options of {@link ClipTokenizer.call}. */
export interface ClipCallOptions {
  /** Row length; defaults to the tokenizer's `modelMaxLength`. */
  maxLength?: number;
  /** "max_length" (default, as SD pipelines): every row `maxLength` long; "longest": to the longest row. */
  padding?: "max_length" | "longest" | false;
  /** Default true: rows longer than `maxLength` are cut, keeping EOS last. */
  truncation?: boolean;
}

/** Output of {@link ClipTokenizer.call}: one row per text. */
export interface ClipBatchEncoding {
  inputIds: number[][];
  /** 1 for BOS, text and EOS, 0 for padding. */
  attentionMask: number[][];
}

/** A merge as a `"left right"` line or a `[left, right]` pair (tokenizer.json uses both). */
export type BpeMerge = string | readonly [string, string];

interface AddedToken {
  content: string;
  id: number;
}

/**
 * Byte-level BPE tokenizer with CLIP's cleaning, pre-tokenizer and special tokens.
 *
 * @example
 * ```ts
 * const tok = ClipTokenizer.fromVocabAndMerges(vocab, mergesTxt);
 * tok.call(["a red circle"], { maxLength: 77 }).inputIds[0].length; // 77
 * ```
 */
export class ClipTokenizer {
  /** Default row length of {@link call}. */
  readonly modelMaxLength: number;
  readonly bosTokenId: number;
  readonly eosTokenId: number;
  readonly padTokenId: number;
  readonly unkTokenId: number;

  private readonly vocab: Map<string, number>;
  private readonly idToTokenMap = new Map<number, string>();
  private readonly ranks: Map<string, number>;
  private readonly added: AddedToken[] = [];
  private readonly addedByKey = new Map<string, number>();
  private addedSplitter: RegExp | null = null;
  private readonly cache = new Map<string, number[]>();
  private size = 0;

  private constructor(vocab: Map<string, number>, ranks: Map<string, number>, options: ClipTokenizerOptions) {
    this.vocab = vocab;
    this.ranks = ranks;
    for (const [token, id] of vocab) {
      this.idToTokenMap.set(id, token);
      if (id + 1 > this.size) this.size = id + 1;
    }
    for (const [content, id] of Object.entries(options.addedTokens ?? {})) this.registerAdded(content, id);
    const need = (name: string, token: string) => {
      const id = this.tokenToId(token);
      if (id === undefined) {
        throw new RangeError(`CLIP tokenizer: ${name} "${token}" is not in the vocabulary`);
      }
      return id;
    };
    const eos = options.eosToken ?? CLIP_EOS;
    this.bosTokenId = need("bos_token", options.bosToken ?? CLIP_BOS);
    this.eosTokenId = need("eos_token", eos);
    this.padTokenId = need("pad_token", options.padToken ?? eos);
    this.unkTokenId = need("unk_token", options.unkToken ?? eos);
    // Special tokens are whole units in any text, as in both reference implementations.
    for (const id of [this.bosTokenId, this.eosTokenId]) this.registerAdded(this.idToTokenMap.get(id)!, id);
    const len = options.modelMaxLength;
    this.modelMaxLength = len !== undefined && Number.isInteger(len) && len >= 2 && len <= NO_LIMIT
      ? len
      : CLIP_MODEL_MAX_LENGTH;
  }

  /**
   * Builds a tokenizer from the parsed `vocab.json` and the merges (the text of `merges.txt`, whose
   * `#version` line is skipped, or its lines/pairs).
   *
   * @example
   * ```ts
   * const tok = ClipTokenizer.fromVocabAndMerges(
   *   JSON.parse(await Deno.readTextFile("tokenizer/vocab.json")),
   *   await Deno.readTextFile("tokenizer/merges.txt"),
   * );
   * ```
   */
  static fromVocabAndMerges(
    vocab: Record<string, number>,
    merges: string | readonly BpeMerge[],
    options: ClipTokenizerOptions = {},
  ): ClipTokenizer {
    return new ClipTokenizer(
      checkVocab(vocab, "vocab.json"),
      mergeRanks(typeof merges === "string" ? parseMergesTxt(merges, "merges.txt") : merges, "merges.txt"),
      options,
    );
  }

  /**
   * Builds a tokenizer from a parsed Hugging Face `tokenizer.json` whose model is CLIP's byte-level BPE
   * (`model.type` "BPE", `end_of_word_suffix` "</w>"); its `added_tokens` become added tokens, and its
   * `truncation.max_length` / `padding.pad_token` fill options that are not given.
   *
   * @example
   * ```ts
   * const tok = ClipTokenizer.fromTokenizerJson(JSON.parse(await Deno.readTextFile("tokenizer/tokenizer.json")));
   * ```
   */
  static fromTokenizerJson(
    json: unknown,
    options: ClipTokenizerOptions = {},
    file = "tokenizer.json",
  ): ClipTokenizer {
    const root = json as Record<string, unknown> | null;
    if (!isObject(root) || !isObject(root.model)) {
      throw new SyntaxError(`${file}: expected an object with a "model" object`);
    }
    const model = root.model as Record<string, unknown>;
    if (model.type !== undefined && model.type !== "BPE") {
      throw new SyntaxError(`${file}: expected model.type "BPE" (CLIP), got ${JSON.stringify(model.type)}`);
    }
    if (model.end_of_word_suffix !== undefined && model.end_of_word_suffix !== END_OF_WORD) {
      throw new SyntaxError(
        `${file}: expected model.end_of_word_suffix "${END_OF_WORD}" (CLIP), got ${
          JSON.stringify(model.end_of_word_suffix)
        }`,
      );
    }
    if (!isObject(model.vocab)) throw new SyntaxError(`${file}: expected model.vocab to be an object`);
    if (!Array.isArray(model.merges)) throw new SyntaxError(`${file}: expected model.merges to be an array`);
    const vocab = checkVocab(model.vocab as Record<string, number>, `${file} model.vocab`);
    const ranks = mergeRanks(model.merges as BpeMerge[], `${file} model.merges`);

    const addedTokens: Record<string, number> = {};
    const list = root.added_tokens ?? [];
    if (!Array.isArray(list)) throw new SyntaxError(`${file}: expected added_tokens to be an array`);
    for (const entry of list) {
      if (!isObject(entry) || typeof entry.content !== "string" || !Number.isInteger(entry.id)) {
        throw new SyntaxError(
          `${file}: expected added_tokens entries {id, content}, got ${JSON.stringify(entry)}`,
        );
      }
      addedTokens[entry.content as string] = entry.id as number;
    }
    const truncation = root.truncation as Record<string, unknown> | null | undefined;
    const padding = root.padding as Record<string, unknown> | null | undefined;
    return new ClipTokenizer(vocab, ranks, {
      modelMaxLength: isObject(truncation) && typeof truncation.max_length === "number"
        ? truncation.max_length
        : undefined,
      padToken: isObject(padding) && typeof padding.pad_token === "string" ? padding.pad_token : undefined,
      ...definedOnly(options),
      addedTokens: { ...addedTokens, ...options.addedTokens },
    });
  }

  /**
   * Loads `dir/<subfolder>` (default `tokenizer/`; `dir` itself when it has no such folder but holds the
   * files): `tokenizer.json` if present, else `vocab.json` + `merges.txt`, with `tokenizer_config.json`,
   * `special_tokens_map.json` and `added_tokens.json` when present.
   *
   * @example
   * ```ts
   * const tok = await ClipTokenizer.fromModelFolder("models/sdxl", { subfolder: "tokenizer_2" });
   * tok.padTokenId; // 0 ("!")
   * ```
   */
  static async fromModelFolder(
    dir: string,
    { subfolder = "tokenizer" }: { subfolder?: string } = {},
  ): Promise<ClipTokenizer> {
    let folder = join(dir, subfolder);
    if (
      !(await exists(folder)) &&
      (await exists(join(dir, "vocab.json")) || await exists(join(dir, "tokenizer.json")))
    ) {
      folder = dir;
    }
    const config = await readJsonIfExists(join(folder, "tokenizer_config.json"));
    const specialMap = await readJsonIfExists(join(folder, "special_tokens_map.json"));
    const addedJsonPath = join(folder, "added_tokens.json");
    const addedJson = await readJsonIfExists(addedJsonPath);
    const options = clipOptionsFromConfig(config, specialMap);
    if (addedJson !== undefined) {
      if (!isObject(addedJson) || !Object.values(addedJson).every(Number.isInteger)) {
        throw new SyntaxError(`${addedJsonPath}: expected an object of token -> integer id`);
      }
      options.addedTokens = { ...options.addedTokens, ...(addedJson as Record<string, number>) };
    }

    const tokenizerJsonPath = join(folder, "tokenizer.json");
    if (await exists(tokenizerJsonPath)) {
      return ClipTokenizer.fromTokenizerJson(await readJson(tokenizerJsonPath), options, tokenizerJsonPath);
    }
    const vocabPath = join(folder, "vocab.json");
    const mergesPath = join(folder, "merges.txt");
    const vocabJson = await readJson(vocabPath, `(and no ${tokenizerJsonPath})`);
    const vocab = checkVocab(vocabJson as Record<string, number>, vocabPath);
    const merges = parseMergesTxt(await readText(mergesPath), mergesPath);
    return new ClipTokenizer(vocab, mergeRanks(merges, mergesPath), options);
  }

  /** Number of ids: the base vocabulary plus added tokens (the embedding table's rows). */
  get vocabSize(): number {
    return this.size;
  }

  /** The id of a vocabulary or added token, exactly as spelled (byte-level, with `</w>`). */
  tokenToId(token: string): number | undefined {
    return this.vocab.get(token) ?? this.added.find((a) => a.content === token)?.id;
  }

  /** The token string of an id. */
  idToToken(id: number): string | undefined {
    return this.idToTokenMap.get(id);
  }

  /**
   * Token ids of `text`, without BOS/EOS.
   *
   * @example
   * ```ts
   * tok.encode("A photo"); // [320, 1125]
   * ```
   */
  encode(text: string): number[] {
    const normalized = cleanText(text);
    const ids: number[] = [];
    if (this.addedSplitter === null) {
      this.encodeSegment(normalized, ids);
      return ids;
    }
    let last = 0;
    for (const m of normalized.matchAll(this.addedSplitter)) {
      this.encodeSegment(normalized.slice(last, m.index), ids);
      ids.push(this.addedByKey.get(m[0])!);
      last = m.index + m[0].length;
    }
    this.encodeSegment(normalized.slice(last), ids);
    return ids;
  }

  /**
   * Fixed-length batch for a text encoder: BOS + ids + EOS per text, truncated to `maxLength` with EOS kept
   * last, padded with the pad token.
   *
   * @example
   * ```ts
   * const { inputIds, attentionMask } = tok.call(["a cat", ""], { maxLength: 77 });
   * inputIds[1].slice(0, 3); // [49406, 49407, 49407]
   * attentionMask[1].slice(0, 3); // [1, 1, 0]
   * ```
   */
  call(texts: string | readonly string[], options: ClipCallOptions = {}): ClipBatchEncoding {
    const maxLength = options.maxLength ?? this.modelMaxLength;
    if (!Number.isInteger(maxLength) || maxLength < 2) {
      throw new RangeError(
        `CLIP tokenizer: maxLength must be an integer >= 2 (BOS and EOS), got ${maxLength}`,
      );
    }
    const padding = options.padding ?? "max_length";
    const truncation = options.truncation ?? true;
    const rows = (typeof texts === "string" ? [texts] : texts).map((text) => {
      let body = this.encode(text);
      if (truncation && body.length > maxLength - 2) body = body.slice(0, maxLength - 2);
      return [this.bosTokenId, ...body, this.eosTokenId];
    });
    const width = padding === "max_length"
      ? Math.max(maxLength, ...rows.map((r) => r.length))
      : padding === "longest"
      ? Math.max(0, ...rows.map((r) => r.length))
      : 0;
    const inputIds: number[][] = [];
    const attentionMask: number[][] = [];
    for (const row of rows) {
      const pad = Math.max(0, width - row.length);
      inputIds.push(pad ? row.concat(new Array<number>(pad).fill(this.padTokenId)) : row);
      attentionMask.push(new Array<number>(row.length).fill(1).concat(new Array<number>(pad).fill(0)));
    }
    return { inputIds, attentionMask };
  }

  /**
   * Adds tokens matched as whole units in any text (after cleaning and lowercasing, so `<New1>` and `<new1>`
   * are one token) before BPE; new ones get ids after the current last id, in order. Returns each token's
   * id (an existing token keeps its id).
   *
   * @example
   * ```ts
   * const [id] = tok.addTokens(["<new1>"]); // 49408 for CLIP
   * tok.encode("a <new1> dog"); // [320, 49408, 1929]
   * ```
   */
  addTokens(tokens: readonly string[]): number[] {
    return tokens.map((token) => {
      if (typeof token !== "string" || cleanText(token) === "") {
        throw new RangeError(
          `CLIP tokenizer: an added token must be a non-blank string, got ${JSON.stringify(token)}`,
        );
      }
      const existing = this.addedByKey.get(cleanText(token)) ?? this.tokenToId(token);
      if (existing !== undefined) return existing;
      const id = this.size;
      this.registerAdded(token, id);
      return id;
    });
  }

  /**
   * A per-call overlay: a tokenizer that knows this one's tokens plus `tokens` (added as {@link addTokens}
   * does), leaving this one unchanged, so one request's new tokens never change how another request's text
   * is split. Vocabulary and merges are shared, not copied.
   *
   * @example
   * ```ts
   * const { tokenizer, ids } = tok.withAddedTokens(["<new1>"]);
   * tokenizer.encode("a <new1> dog"); // [320, 49408, 1929]
   * tok.encode("a <new1> dog"); // the ordinary subword split
   * ```
   */
  withAddedTokens(tokens: readonly string[]): { tokenizer: ClipTokenizer; ids: number[] } {
    const t: ClipTokenizer = Object.create(ClipTokenizer.prototype);
    Object.assign(t, this, {
      added: [...this.added],
      addedByKey: new Map(this.addedByKey),
      idToTokenMap: new Map(this.idToTokenMap),
      cache: new Map(),
    });
    return { tokenizer: t, ids: t.addTokens(tokens) };
  }

  /**
   * Text of ids: `</w>` becomes a space, special tokens are dropped.
   *
   * @example
   * ```ts
   * tok.decode([49406, 320, 2368, 49407]); // "a cat"
   * ```
   */
  decode(ids: readonly number[]): string {
    let chars = "";
    let out = "";
    for (const id of ids) {
      if (id === this.bosTokenId || id === this.eosTokenId || id === this.padTokenId) continue;
      const token = this.idToTokenMap.get(id);
      if (token === undefined) continue;
      if (this.vocab.get(token) !== id) {
        out += byteLevelDecode(chars) + token + " ";
        chars = "";
      } else chars += token;
    }
    out += byteLevelDecode(chars);
    return out.split(END_OF_WORD).join(" ").replace(/ +/g, " ").trim();
  }

  private registerAdded(content: string, id: number) {
    const key = cleanText(content);
    if (key === "" || this.addedByKey.has(key)) return;
    this.added.push({ content, id });
    this.addedByKey.set(key, id);
    if (!this.idToTokenMap.has(id)) this.idToTokenMap.set(id, content);
    if (id + 1 > this.size) this.size = id + 1;
    // Longest first, so "<new10>" wins over "<new1>".
    const keys = [...this.addedByKey.keys()].sort((a, b) => b.length - a.length).map(escapeRegExp);
    this.addedSplitter = new RegExp(keys.join("|"), "g");
    this.cache.clear();
  }

  private encodeSegment(segment: string, out: number[]) {
    for (const m of segment.matchAll(PRE_TOKENIZER)) {
      const word = m[0];
      let ids = this.cache.get(word);
      if (ids === undefined) {
        ids = bpeWord(byteLevelEncode(word), this.ranks).map((t) => this.vocab.get(t) ?? this.unkTokenId);
        if (this.cache.size >= MAX_CACHE) this.cache.clear();
        this.cache.set(word, ids);
      }
      for (const id of ids) out.push(id);
    }
  }
}

/**
 * OpenAI's bpe() on one pre-token spelled in the byte-level alphabet: `</w>` goes on the last character, then
 * every occurrence of the lowest-ranked adjacent pair is merged until no pair has a rank. `ranks` maps
 * `"left right"` to the merge's line number.
 *
 * @example
 * ```ts
 * bpeWord("cat", new Map([["c a", 0], ["ca t</w>", 1]])); // ["cat</w>"]
 * ```
 */
export function bpeWord(chars: string, ranks: ReadonlyMap<string, number>): string[] {
  let word = chars.split("");
  word[word.length - 1] += END_OF_WORD;
  while (word.length > 1) {
    let best = Infinity;
    let at = -1;
    for (let i = 0; i + 1 < word.length; i++) {
      const rank = ranks.get(word[i] + " " + word[i + 1]);
      if (rank !== undefined && rank < best) {
        best = rank;
        at = i;
      }
    }
    if (at < 0) break;
    const first = word[at];
    const second = word[at + 1];
    const next: string[] = [];
    for (let i = 0; i < word.length;) {
      if (i + 1 < word.length && word[i] === first && word[i + 1] === second) {
        next.push(first + second);
        i += 2;
      } else next.push(word[i++]);
    }
    word = next;
  }
  return word;
}

/**
 * Options from a parsed `tokenizer_config.json` and `special_tokens_map.json` (config first): model_max_length,
 * bos/eos/pad/unk tokens (strings or `{content}` objects) and `added_tokens_decoder`.
 *
 * @example
 * ```ts
 * clipOptionsFromConfig({ model_max_length: 77, pad_token: "!" }); // { modelMaxLength: 77, padToken: "!" }
 * ```
 */
export function clipOptionsFromConfig(config?: unknown, specialTokensMap?: unknown): ClipTokenizerOptions {
  const cfg = isObject(config) ? config : {};
  const map = isObject(specialTokensMap) ? specialTokensMap : {};
  const tokenOf = (key: string) => tokenContent(cfg[key]) ?? tokenContent(map[key]);
  const options: ClipTokenizerOptions = definedOnly({
    modelMaxLength: typeof cfg.model_max_length === "number" ? cfg.model_max_length : undefined,
    bosToken: tokenOf("bos_token"),
    eosToken: tokenOf("eos_token"),
    padToken: tokenOf("pad_token"),
    unkToken: tokenOf("unk_token"),
  });
  if (isObject(cfg.added_tokens_decoder)) {
    const added: Record<string, number> = {};
    for (const [id, entry] of Object.entries(cfg.added_tokens_decoder)) {
      const content = tokenContent(entry);
      if (content !== undefined && /^\d+$/.test(id)) added[content] = Number(id);
    }
    options.addedTokens = added;
  }
  return options;
}

/** Parses the text of `merges.txt` into its merge lines, skipping the `#version` header and blank lines. */
export function parseMergesTxt(text: string, file = "merges.txt"): string[] {
  const lines = text.split(/\r?\n/);
  if (lines.length && lines[0].startsWith("#version")) lines.shift();
  const merges = lines.filter((l) => l !== "");
  const bad = merges.findIndex((l) => l.split(" ").length !== 2);
  if (bad >= 0) {
    throw new SyntaxError(`${file}: expected "left right" merge lines, got ${JSON.stringify(merges[bad])}`);
  }
  return merges;
}

/** CLIP's basic cleaning without ftfy: NFC, whitespace runs to one space, strip; then lowercase. */
function cleanText(text: string): string {
  return text.normalize("NFC").replace(WHITESPACE_RUN, " ").trim().toLowerCase();
}

function mergeRanks(merges: readonly BpeMerge[], file: string): Map<string, number> {
  const ranks = new Map<string, number>();
  merges.forEach((merge, rank) => {
    let key: string;
    if (typeof merge === "string") key = merge;
    else if (Array.isArray(merge) && merge.length === 2) key = `${merge[0]} ${merge[1]}`;
    else throw new SyntaxError(`${file}: expected a merge "a b" or ["a", "b"], got ${JSON.stringify(merge)}`);
    if (key.split(" ").length !== 2) {
      throw new SyntaxError(`${file}: malformed merge ${JSON.stringify(merge)}`);
    }
    ranks.set(key, rank);
  });
  return ranks;
}

function checkVocab(vocab: unknown, file: string): Map<string, number> {
  if (!isObject(vocab)) throw new SyntaxError(`${file}: expected an object of token -> id`);
  const map = new Map<string, number>();
  for (const [token, id] of Object.entries(vocab)) {
    if (!Number.isInteger(id) || (id as number) < 0) {
      throw new SyntaxError(
        `${file}: expected a non-negative integer id for ${JSON.stringify(token)}, got ${id}`,
      );
    }
    map.set(token, id as number);
  }
  if (map.size === 0) throw new SyntaxError(`${file}: the vocabulary is empty`);
  return map;
}

function tokenContent(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (isObject(value) && typeof value.content === "string") return value.content;
  return undefined;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function definedOnly<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

async function readText(path: string, alsoMissing = ""): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error(`CLIP tokenizer: missing ${path}${alsoMissing ? " " + alsoMissing : ""}`, { cause: e });
    }
    throw e;
  }
}

async function readJson(path: string, alsoMissing = ""): Promise<unknown> {
  const text = await readText(path, alsoMissing);
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new SyntaxError(`${path}: not valid JSON (${(e as Error).message})`, { cause: e });
  }
}

async function readJsonIfExists(path: string): Promise<unknown> {
  return await exists(path) ? readJson(path) : undefined;
}
