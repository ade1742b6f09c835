import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { assert, assertEquals } from "../testing.ts";
import { ClipTokenizer } from "../tokenizer/clip_tokenizer.ts";
import {
  buildShapesWorldTokenizerFiles,
  SHAPESWORLD_CATEGORIES,
  SHAPESWORLD_MAX_LENGTH,
  SHAPESWORLD_WORDS,
} from "./vocabulary.ts";

const REF = new URL("../../../shared/reference/clip-tokenizer/", import.meta.url);
const files = buildShapesWorldTokenizerFiles();
const BOS = files.vocabJson["<|startoftext|>"];
const EOS = files.vocabJson["<|endoftext|>"];

async function writeModelFolder(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "shapesworld_vocab_test_" });
  await Deno.mkdir(`${dir}/tokenizer`);
  const write = (name: string, value: unknown) =>
    Deno.writeTextFile(`${dir}/tokenizer/${name}`, typeof value === "string" ? value : JSON.stringify(value));
  await write("vocab.json", files.vocabJson);
  await write("merges.txt", "#version: 0.2\n" + files.merges.join("\n") + "\n");
  await write("tokenizer_config.json", files.tokenizerConfig);
  await write("special_tokens_map.json", files.specialTokensMap);
  return dir;
}

Deno.test("the word list: the asked-for words, lowercase single pre-tokens, no duplicates", () => {
  for (
    const w of [
      "circle",
      "heart",
      "cyan",
      "gray",
      "tiny",
      "corner",
      "gradient",
      "background",
      "zoomed",
      "sks",
    ]
  ) {
    assert(SHAPESWORLD_WORDS.includes(w), w);
  }
  assertEquals(new Set(SHAPESWORLD_WORDS).size, SHAPESWORLD_WORDS.length);
  for (const w of SHAPESWORLD_WORDS) assert(/^([a-z]+|[,.])$/.test(w), `"${w}" is not one CLIP pre-token`);
  assertEquals(SHAPESWORLD_CATEGORIES.colours.length >= 12, true);
});

Deno.test("vocab layout: byte alphabet as in CLIP, merge results, BOS and EOS last", async () => {
  const clip: Record<string, number> = JSON.parse(await Deno.readTextFile(new URL("vocab.json", REF)));
  const byId = (v: Record<string, number>) => Object.entries(v).sort((a, b) => a[1] - b[1]).map(([t]) => t);
  assertEquals(byId(files.vocabJson).slice(0, 512), byId(clip).slice(0, 512));
  const size = Object.keys(files.vocabJson).length;
  assertEquals(new Set(Object.values(files.vocabJson)).size, size);
  assertEquals([BOS, EOS], [size - 2, size - 1]);
  assertEquals(files.tokenizerConfig.model_max_length, SHAPESWORLD_MAX_LENGTH);
  // Each merge's result is in the vocab, as HF's BPE requires.
  for (const m of files.merges) assert(m.replace(" ", "") in files.vocabJson, m);
  assertEquals(buildShapesWorldTokenizerFiles(), files, "deterministic");
});

Deno.test("every word is one token, on all three loading paths and in HF tokenizers.js", async () => {
  const dir = await writeModelFolder();
  try {
    const fromFolder = await ClipTokenizer.fromModelFolder(dir);
    const fromJson = ClipTokenizer.fromTokenizerJson(files.tokenizerJson, {
      modelMaxLength: SHAPESWORLD_MAX_LENGTH,
    });
    const fromObjects = ClipTokenizer.fromVocabAndMerges(files.vocabJson, files.merges);
    const hf = new HfTokenizer(files.tokenizerJson, files.tokenizerConfig);
    assertEquals(fromFolder.modelMaxLength, SHAPESWORLD_MAX_LENGTH);
    assertEquals(fromFolder.vocabSize, Object.keys(files.vocabJson).length);
    for (const word of SHAPESWORLD_WORDS) {
      const id = files.vocabJson[word + "</w>"];
      assert(id !== undefined, word);
      for (const tok of [fromFolder, fromJson, fromObjects]) assertEquals(tok.encode(word), [id], word);
      assertEquals(hf.encode(word).ids, [BOS, id, EOS], word);
      assertEquals(fromFolder.encode(word.toUpperCase()), [id], word);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("captions: one id per word; unknown words fall back to several character-level ids", () => {
  const tok = ClipTokenizer.fromTokenizerJson(files.tokenizerJson, {
    modelMaxLength: SHAPESWORLD_MAX_LENGTH,
  });
  const caption =
    "a far away a photo of a small red striped circle on the upper left and a large blue dotted " +
    "square on the lower right, green background";
  const words = caption.replace(",", " ,").split(" ");
  const { inputIds, attentionMask } = tok.call(caption);
  assertEquals(inputIds[0].length, SHAPESWORLD_MAX_LENGTH);
  assertEquals(inputIds[0].slice(0, words.length + 2), [
    BOS,
    ...words.map((w) => files.vocabJson[w + "</w>"]),
    EOS,
  ]);
  assertEquals(attentionMask[0].filter((m) => m === 1).length, words.length + 2);
  assertEquals(tok.decode(inputIds[0]), caption.replace(",", " ,"));

  assertEquals(tok.encode("qxz"), ["q", "x", "z</w>"].map((t) => files.vocabJson[t]));
  for (const unknown of ["zebra", "xylophone", "moongate", "octagon"]) {
    const ids = tok.encode(unknown);
    assert(ids.length > 1, `${unknown} -> ${ids}`);
    assertEquals(tok.decode(ids), unknown);
  }
  // Digits, symbols and non-ASCII text still tokenize through the byte alphabet.
  assertEquals(tok.decode(tok.encode("café 42 <new1>")), "café 4 2 < new 1 >");
  const [newId] = tok.addTokens(["<new1>"]);
  assertEquals(newId, Object.keys(files.vocabJson).length);
  assertEquals(tok.encode("a <new1> circle"), [
    files.vocabJson["a</w>"],
    newId,
    files.vocabJson["circle</w>"],
  ]);
});
