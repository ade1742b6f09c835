import { assertEquals, assertThrows } from "../testing.ts";
import { loadModelFolder } from "../models/model_folder.ts";
import { attributeTokenLabels } from "./token_labels.ts";
import { COLOURS, SHAPES } from "./world.ts";

const TINY = new URL("../../models/tiny-shapes", import.meta.url).pathname;
const { tokenizer } = await loadModelFolder(TINY);
const red = COLOURS.indexOf("red"), blue = COLOURS.indexOf("blue"), gray = COLOURS.indexOf("gray");
const circle = SHAPES.indexOf("circle"), cross = SHAPES.indexOf("cross");

Deno.test("one object: its colour and shape label every position from their words on, padding included", () => {
  // BOS a large red circle , blue background EOS pad...
  const { colour, shape } = attributeTokenLabels("a large red circle, blue background", tokenizer, 16);
  assertEquals([...colour], [-1, -1, -1, ...new Array(13).fill(red)]);
  assertEquals([...shape], [-1, -1, -1, -1, ...new Array(12).fill(circle)]);
});

Deno.test("two objects: each label stays inside its own phrase; unsaid attributes are unlabelled", () => {
  // BOS a red shape and a gray cross , blue background EOS pad...
  const { colour, shape } = attributeTokenLabels(
    "a red shape and a gray cross, blue background",
    tokenizer,
    14,
  );
  assertEquals([...colour], [-1, -1, red, red, -1, -1, gray, gray, -1, -1, -1, -1, -1, -1]);
  assertEquals([...shape], [-1, -1, -1, -1, -1, -1, -1, cross, -1, -1, -1, -1, -1, -1]);
});

Deno.test("the empty caption and the background alone label nothing; a word of several tokens is refused", () => {
  for (const c of ["", "blue background", "a photo of, blue background"]) {
    const { colour, shape } = attributeTokenLabels(c, tokenizer, 12);
    assertEquals([...colour, ...shape].filter((x) => x !== -1), [], c);
  }
  const { colour } = attributeTokenLabels("a blue circle", tokenizer, 8);
  assertEquals([...colour], [-1, -1, blue, blue, blue, blue, blue, blue]);
  assertThrows(() => attributeTokenLabels("a red circle", tokenizer, 1), RangeError);
});
