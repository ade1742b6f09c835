import { assertEquals } from "../../gpu-worker/testing.ts";
import { ConceptSliderInput, pairsFromFolders } from "./concept_slider.ts";

Deno.test("visual slider folders: low/high pair at scale 1, verylow/veryhigh at 2, by file name", () => {
  const { pairs, problems } = pairsFromFolders([
    "low/a.png",
    "high/a.png",
    "verylow/a.png",
    "veryhigh/a.png",
    "low/b.png",
    "high/b.png",
    "x/low/c.png",
    "x/high/c.png",
  ]);
  assertEquals(problems, []);
  assertEquals(pairs, [
    { low: "low/a.png", high: "high/a.png", scale: 1 },
    { low: "low/b.png", high: "high/b.png", scale: 1 },
    { low: "x/low/c.png", high: "x/high/c.png", scale: 1 },
    { low: "verylow/a.png", high: "veryhigh/a.png", scale: 2 },
  ]);
});

Deno.test("visual slider folders: what cannot be paired is named", () => {
  const { pairs, problems } = pairsFromFolders([
    "low/a.png",
    "high/b.png",
    "misc/c.png",
    "d.png",
    "x/low/e.png",
    "y/high/e.png",
  ]);
  assertEquals(pairs, []);
  assertEquals(problems, [
    "misc/c.png is not in a folder verylow/, low/, high/ or veryhigh/",
    "d.png is not in a folder verylow/, low/, high/ or veryhigh/",
    "low/a.png has no high/a.* beside it to pair with",
    "x/low/e.png has no high/e.* beside it to pair with",
    "high/b.png has no low/b.* beside it to pair with",
    "y/high/e.png has no low/e.* beside it to pair with",
  ]);
  assertEquals(pairsFromFolders([]).problems, ["no images in folders verylow/, low/, high/, veryhigh/"]);
});

Deno.test("a visual slider takes pairs or one zip of folders; without either it is refused", () => {
  assertEquals(ConceptSliderInput.safeParse({ kind: "visual", images: "file_1" }).success, true);
  const r = ConceptSliderInput.safeParse({ kind: "visual" });
  assertEquals(r.success, false);
  assertEquals(r.error?.issues[0].path, ["kind"]);
});
