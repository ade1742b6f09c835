import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { assertEquals, assertRejects, assertThrows } from "../testing.ts";
import { ClipTokenizer, parseMergesTxt } from "./clip_tokenizer.ts";
import { clipTokenizerJson } from "./clip_tokenizer_json.ts";

const REF = new URL("../../../shared/reference/clip-tokenizer/", import.meta.url);
const BOS = 49406;
const EOS = 49407;

interface Case {
  text: string;
  ids: number[];
}
const cases: Case[] = JSON.parse(await Deno.readTextFile(new URL("tokenized.json", REF))).cases;
const vocabText = await Deno.readTextFile(new URL("vocab.json", REF));
const mergesText = await Deno.readTextFile(new URL("merges.txt", REF));

// Load and encode times are figures of the machine: `deno task bench` prints them (scripts/bench_host.ts).
const tok = ClipTokenizer.fromVocabAndMerges(JSON.parse(vocabText), mergesText);

async function tempModelFolder(files: Record<string, string>): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "clip_tokenizer_test_" });
  await Deno.mkdir(`${dir}/tokenizer`);
  for (const [name, text] of Object.entries(files)) {
    await Deno.writeTextFile(`${dir}/tokenizer/${name}`, text);
  }
  return dir;
}

function fullTokenizerJson(): string {
  return JSON.stringify(clipTokenizerJson(JSON.parse(vocabText), parseMergesTxt(mergesText)));
}

Deno.test("vocab.json + merges.txt: every reference case matches exactly", () => {
  assertEquals(tok.vocabSize, 49408);
  assertEquals([tok.bosTokenId, tok.eosTokenId, tok.padTokenId, tok.modelMaxLength], [BOS, EOS, EOS, 77]);
  assertEquals(cases.length, 14);
  for (const c of cases) {
    assertEquals([BOS, ...tok.encode(c.text), EOS], c.ids, JSON.stringify(c.text));
    const { inputIds, attentionMask } = tok.call([c.text], { padding: false, truncation: false });
    assertEquals(inputIds, [c.ids], JSON.stringify(c.text));
    assertEquals(attentionMask, [c.ids.map(() => 1)]);
  }
});

Deno.test("call: pads with EOS to 77 and truncates the long case keeping EOS last", () => {
  const long = cases.find((c) => c.ids.length > 77)!;
  const short = cases.find((c) => c.text === "a photo of a cat")!;
  const { inputIds, attentionMask } = tok.call([short.text, long.text, ""]);
  assertEquals(inputIds.map((r) => r.length), [77, 77, 77]);
  assertEquals(inputIds[0], [...short.ids, ...new Array(77 - short.ids.length).fill(EOS)]);
  assertEquals(attentionMask[0], [...short.ids.map(() => 1), ...new Array(77 - short.ids.length).fill(0)]);
  assertEquals(inputIds[1], [...long.ids.slice(0, 76), EOS]);
  assertEquals(attentionMask[1], new Array(77).fill(1));
  assertEquals(inputIds[2].slice(0, 3), [BOS, EOS, EOS]);
  assertEquals(attentionMask[2].slice(0, 3), [1, 1, 0]);

  const longest = tok.call([short.text, "a cat"], { padding: "longest" });
  assertEquals(longest.inputIds[1], [BOS, 320, 2368, EOS, EOS, EOS, EOS]);
  assertEquals(tok.call(long.text, { maxLength: 5 }).inputIds, [[...long.ids.slice(0, 4), EOS]]);
  assertThrows(() => tok.call("a", { maxLength: 1 }), RangeError, "maxLength");

  // SD2-style pad token "!" (id 0).
  const sd2 = ClipTokenizer.fromVocabAndMerges(JSON.parse(vocabText), mergesText, { padToken: "!" });
  assertEquals(sd2.call("a cat", { maxLength: 6 }).inputIds, [[BOS, 320, 2368, EOS, 0, 0]]);
});

Deno.test("addTokens: new ids at the end of the vocab, matched as whole units before BPE", () => {
  const t = ClipTokenizer.fromVocabAndMerges(JSON.parse(vocabText), mergesText);
  const [id] = t.addTokens(["<new1>"]);
  assertEquals(id, 49408);
  assertEquals(t.vocabSize, 49409);
  const ref = cases.find((c) => c.text.includes("<new1>"))!; // "a <new1> wooden pot, close up"
  assertEquals(t.encode(ref.text), [320, id, ...ref.ids.slice(6, -1)]);
  assertEquals(t.encode("a <NEW1>   wooden"), [320, id, 9057]);
  assertEquals(t.encode("a<new1>b"), [t.encode("a")[0], id, t.encode("b")[0]]);
  assertEquals(t.addTokens(["<new1>", "<new10>", "<new2>"]), [49408, 49409, 49410]);
  assertEquals(t.encode("<new10><new1>"), [49409, 49408]);
  assertEquals(t.idToToken(49409), "<new10>");
  assertEquals(t.decode([BOS, 320, id, 9057, EOS]), "a <new1> wooden");
  assertThrows(() => t.addTokens(["  "]), RangeError, "non-blank");
  // The base tokenizer is untouched.
  assertEquals(tok.vocabSize, 49408);
});

Deno.test("tokenizer.json and vocab.json + merges.txt folders give identical ids, and match HF tokenizers.js", async () => {
  const jsonDir = await tempModelFolder({
    "tokenizer.json": fullTokenizerJson(),
    "tokenizer_config.json": JSON.stringify({ model_max_length: 77, pad_token: "<|endoftext|>" }),
  });
  const filesDir = await tempModelFolder({ "vocab.json": vocabText, "merges.txt": mergesText });
  try {
    const fromJson = await ClipTokenizer.fromModelFolder(jsonDir);
    const fromFiles = await ClipTokenizer.fromModelFolder(filesDir);
    const hf = new HfTokenizer(JSON.parse(fullTokenizerJson()), { model_max_length: 77 });
    assertEquals(fromJson.vocabSize, 49408);
    for (const c of cases) {
      const viaJson = fromJson.call(c.text, { padding: false, truncation: false }).inputIds[0];
      assertEquals(viaJson, c.ids, `tokenizer.json: ${JSON.stringify(c.text)}`);
      assertEquals(fromFiles.call(c.text, { padding: false, truncation: false }).inputIds[0], viaJson);
      assertEquals(hf.encode(c.text).ids, viaJson, `tokenizers.js: ${JSON.stringify(c.text)}`);
    }
    assertEquals(fromJson.call(cases.map((c) => c.text)), fromFiles.call(cases.map((c) => c.text)));
    // Added tokens behave the same on both paths.
    assertEquals(fromJson.addTokens(["<new1>"]), fromFiles.addTokens(["<new1>"]));
    assertEquals(fromJson.encode("a <new1> pot"), fromFiles.encode("a <new1> pot"));
  } finally {
    await Deno.remove(jsonDir, { recursive: true });
    await Deno.remove(filesDir, { recursive: true });
  }
});

Deno.test("fromModelFolder: config, special tokens map, and added tokens saved by textual inversion", async () => {
  const dir = await tempModelFolder({
    "vocab.json": vocabText,
    "merges.txt": mergesText,
    "tokenizer_config.json": JSON.stringify({
      model_max_length: 1e30,
      unk_token: { content: "<|endoftext|>" },
    }),
    "special_tokens_map.json": JSON.stringify({ pad_token: "!" }),
    "added_tokens.json": JSON.stringify({ "<cat-toy>": 49408 }),
  });
  try {
    const t = await ClipTokenizer.fromModelFolder(dir);
    assertEquals([t.modelMaxLength, t.padTokenId, t.vocabSize], [77, 0, 49409]);
    assertEquals(t.encode("a <cat-toy>"), [320, 49408]);
    // A folder that is itself the tokenizer folder also loads.
    assertEquals((await ClipTokenizer.fromModelFolder(`${dir}/tokenizer`)).vocabSize, 49409);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("errors name the missing or malformed file", async () => {
  const empty = await tempModelFolder({});
  const badMerges = await tempModelFolder({
    "vocab.json": vocabText,
    "merges.txt": "#version: 0.2\ni n\nbad\n",
  });
  const badVocab = await tempModelFolder({ "vocab.json": "{not json", "merges.txt": mergesText });
  const badJson = await tempModelFolder({ "tokenizer.json": JSON.stringify({ model: { type: "Unigram" } }) });
  const noMerges = await tempModelFolder({ "vocab.json": vocabText });
  try {
    await assertRejects(() => ClipTokenizer.fromModelFolder(empty), Error, `${empty}/tokenizer/vocab.json`);
    await assertRejects(() => ClipTokenizer.fromModelFolder(badMerges), SyntaxError, "merges.txt");
    await assertRejects(() => ClipTokenizer.fromModelFolder(badVocab), SyntaxError, "vocab.json");
    await assertRejects(() => ClipTokenizer.fromModelFolder(badJson), SyntaxError, "tokenizer.json");
    await assertRejects(() => ClipTokenizer.fromModelFolder(noMerges), Error, "merges.txt");
    assertThrows(() => ClipTokenizer.fromVocabAndMerges({ a: 0 }, "a b"), RangeError, "<|startoftext|>");
  } finally {
    for (const d of [empty, badMerges, badVocab, badJson, noMerges]) {
      await Deno.remove(d, { recursive: true });
    }
  }
});

Deno.test("decode inverts encode for plain text", () => {
  assertEquals(
    tok.decode(tok.call("A photo of a sks dog, 3.14!").inputIds[0]),
    "a photo of a sks dog , 3 . 1 4 !",
  );
  assertEquals(tok.decode(tok.encode("café")), "café");
});
