import { Rng } from "../random.ts";
import { assert, assertEquals, assertThrows } from "../testing.ts";
import { ClipTokenizer } from "../tokenizer/clip_tokenizer.ts";
import { buildShapesWorldTokenizerFiles, SHAPESWORLD_MAX_LENGTH, SHAPESWORLD_WORDS } from "./vocabulary.ts";
import {
  captionOf,
  COLOURS,
  HELD_OUT_COLOUR_BACKGROUNDS,
  HELD_OUT_SHAPE_COLOURS,
  isHeldOut,
  isHeldOutShapeColour,
  PALETTE,
  parseCaption,
  POSITION_CELL,
  POSITIONS,
  sampleHeldOutScene,
  sampleScene,
  sampleTrainScene,
  type Scene,
  SHAPES,
  SIZE_RADIUS,
  SIZES,
  TEXTURES,
} from "./world.ts";

const files = buildShapesWorldTokenizerFiles();
const tokenizer = ClipTokenizer.fromTokenizerJson(files.tokenizerJson, {
  modelMaxLength: SHAPESWORLD_MAX_LENGTH,
});

function scenes(seed: number, n: number, sample = sampleScene): { scene: Scene; caption: string }[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => {
    const scene = sample(rng);
    return { scene, caption: captionOf(scene, rng) };
  });
}

Deno.test("world: the palette, shapes, sizes, positions and textures are vocabulary words", () => {
  for (const w of [...COLOURS, ...SHAPES, ...SIZES, ...TEXTURES, ...POSITIONS.flatMap((p) => p.split(" "))]) {
    assert(SHAPESWORLD_WORDS.includes(w), w);
  }
  for (const a of COLOURS) {
    for (const b of COLOURS) {
      if (a === b) continue;
      const d = Math.hypot(...[0, 1, 2].map((c) => PALETTE[a][c] - PALETTE[b][c]));
      assert(d >= 109, `${a}/${b} only ${d.toFixed(0)} apart`);
    }
  }
});

Deno.test("world: same seed, same scenes and captions; different seeds differ", () => {
  assertEquals(scenes(11, 200), scenes(11, 200));
  assert(JSON.stringify(scenes(11, 50)) !== JSON.stringify(scenes(12, 50)));
});

Deno.test("world: scenes keep their invariants (colours, grid, sizes, no overlap)", () => {
  let two = 0;
  for (const { scene } of scenes(3, 3000)) {
    const { background, objects } = scene;
    assert(objects.length === 1 || objects.length === 2);
    if (objects.length === 2) {
      two++;
      assert(objects[0].colour !== objects[1].colour, "two objects share a colour");
      const [a, b] = objects;
      const reach = (o: typeof a) =>
        o.radius * (Math.abs(Math.cos(o.rotation)) + Math.abs(Math.sin(o.rotation)));
      const gap = Math.max(Math.abs(a.cx - b.cx), Math.abs(a.cy - b.cy)) - reach(a) - reach(b);
      assert(gap > 0.03, `objects overlap (gap ${gap})`);
    }
    for (const o of objects) {
      assert(o.colour !== background, "object colour equals background");
      assert(Math.abs(o.radius / SIZE_RADIUS[o.size] - 1) <= 0.05 + 1e-9);
      const [col, row] = POSITION_CELL[o.position];
      assert(Math.abs(o.cx - [0.27, 0.5, 0.73][col]) <= 0.02 + 1e-9);
      assert(Math.abs(o.cy - [0.27, 0.5, 0.73][row]) <= 0.02 + 1e-9);
      const reach = o.radius * (Math.abs(Math.cos(o.rotation)) + Math.abs(Math.sin(o.rotation)));
      assert(
        Math.min(o.cx, o.cy) - reach > 0.005 && Math.max(o.cx, o.cy) + reach < 0.995,
        "leaves the image",
      );
    }
  }
  assert(two > 800 && two < 1300, `two-object share ${two / 3000}`);
  const only = sampleScene(new Rng(1), {
    objectCount: 1,
    shapes: ["heart"],
    sizes: ["large"],
    backgrounds: ["red"],
  });
  assertEquals([only.background, only.objects[0].shape, only.objects[0].size], ["red", "heart", "large"]);
  assertThrows(() => sampleScene(new Rng(1), { objectCount: 2, colours: ["red"] }), RangeError);
});

Deno.test("captions: every word is a vocabulary word and one token, within the tokenizer's length", () => {
  let longest = 0;
  for (const { caption } of scenes(5, 3000)) {
    const words = caption.replace(",", " ,").split(" ");
    for (const w of words) assert(SHAPESWORLD_WORDS.includes(w), `"${w}" in "${caption}"`);
    assertEquals(tokenizer.encode(caption), words.map((w) => files.vocabJson[w + "</w>"]), caption);
    longest = Math.max(longest, words.length);
  }
  // Room for BOS, EOS and Custom Diffusion's "a far away " prefix.
  assert(longest + 2 + 3 <= SHAPESWORLD_MAX_LENGTH, `longest caption ${longest} words`);
  const full = captionOf({
    background: "black",
    objects: [
      { ...sampleScene(new Rng(0), { objectCount: 1 }).objects[0], shape: "star", colour: "orange" },
    ],
  });
  assert(/^an? \w+ \w+ orange star (on|at|in) the [a-z ]+, black background$/.test(full), full);
});

Deno.test("captions: colours, shapes and background always named; other attributes dropped ~30%", () => {
  const named = { size: 0, texture: 0, position: 0, objects: 0, prefix: 0 };
  const all = scenes(6, 4000);
  for (const { scene, caption } of all) {
    const parsed = parseCaption(caption);
    assertEquals(parsed.background, scene.background, caption);
    assertEquals(parsed.objects.length, scene.objects.length, caption);
    scene.objects.forEach((o, i) => {
      const p = parsed.objects[i];
      assertEquals([p.colour, p.shape], [o.colour, o.shape], caption);
      named.objects++;
      if (p.size !== null) named.size++;
      if (p.texture !== null) named.texture++;
      if (p.position !== null) named.position++;
    });
    if (/^(a|an) (photo|image|picture|drawing) of/.test(caption)) named.prefix++;
  }
  for (const k of ["size", "texture", "position"] as const) {
    const share = named[k] / named.objects;
    assert(share > 0.65 && share < 0.75, `${k} named in ${share}`);
  }
  assert(named.prefix / all.length > 0.1 && named.prefix / all.length < 0.2);
});

Deno.test("parseCaption round-trips captionOf", () => {
  for (const { scene, caption } of scenes(7, 3000)) {
    const parsed = parseCaption(caption);
    assertEquals(parsed.other, [], caption);
    scene.objects.forEach((o, i) => {
      const p = parsed.objects[i];
      for (const k of ["shape", "colour", "size", "texture", "position"] as const) {
        assert(p[k] === null || p[k] === o[k], `${k} of "${caption}"`);
      }
    });
    // Without an RNG everything is named, so the parse is the scene's attributes exactly.
    const full = parseCaption(captionOf(scene));
    assertEquals(full, {
      background: scene.background,
      objects: scene.objects.map(({ shape, colour, size, position, texture }) => ({
        shape,
        colour,
        size,
        position,
        texture,
      })),
      other: [],
    });
  }
  assertEquals(parseCaption("A photo of sks big grey Heart in the middle, with a dark Blue background."), {
    background: "blue",
    objects: [{ shape: "heart", colour: "gray", size: "large", position: "center", texture: null }],
    other: ["sks", "dark"],
  });
  assertEquals(parseCaption("a red circle on the top left").objects[0].position, "upper left");
  assertEquals(parseCaption("a circle").objects[0].colour, null);
});

Deno.test("held-out split: train sampler never yields it, held-out sampler always does (10k each)", () => {
  assertEquals(HELD_OUT_SHAPE_COLOURS.length, 12);
  assertEquals(new Set(HELD_OUT_SHAPE_COLOURS.map(([, c]) => c)).size, 12);
  assertEquals(new Set(HELD_OUT_COLOUR_BACKGROUNDS.map(([, b]) => b)).size, 12);
  assert(HELD_OUT_COLOUR_BACKGROUNDS.every(([c, b]) => c !== b));
  const rng = new Rng(8);
  for (let i = 0; i < 10000; i++) {
    const s = sampleTrainScene(rng);
    assert(!isHeldOut(s), JSON.stringify(s));
    assert(!isHeldOut(parseCaption(captionOf(s, rng))));
  }
  let pairs = 0;
  for (let i = 0; i < 10000; i++) {
    const s = sampleHeldOutScene(rng);
    assert(isHeldOut(s));
    assert(isHeldOut(parseCaption(captionOf(s, rng))), "a held-out caption parses as held out");
    pairs += s.objects.length;
  }
  assert(pairs > 10000);
  // Roughly a fifth of plain samples are held out; every held-out pair still occurs in training otherwise.
  let held = 0;
  for (let i = 0; i < 5000; i++) held += isHeldOut(sampleScene(rng)) ? 1 : 0;
  assert(held / 5000 > 0.15 && held / 5000 < 0.35, `held-out share ${held / 5000}`);
  assert(!isHeldOut({ background: "blue", objects: [{ shape: "circle", colour: null }] }));
  assert(isHeldOut({ background: "black", objects: [{ shape: "circle", colour: "yellow" }] }));
  assert(isHeldOut({ background: "white", objects: [{ shape: null, colour: "green" }] }));
});

Deno.test("captions: attributeDropProbability leaves the colour or the shape unsaid, never both", () => {
  const rng = new Rng(11);
  let colourUnsaid = 0, shapeUnsaid = 0, objects = 0;
  for (let i = 0; i < 3000; i++) {
    const scene = sampleTrainScene(rng, { twoObjectProbability: 0.25 });
    const caption = captionOf(scene, rng, { attributeDropProbability: 0.3 });
    const parsed = parseCaption(caption);
    assertEquals(parsed.background, scene.background, caption);
    assertEquals(parsed.objects.length, scene.objects.length, caption);
    assertEquals(parsed.other, [], caption);
    scene.objects.forEach((o, k) => {
      const p = parsed.objects[k];
      objects++;
      if (p.colour === null) colourUnsaid++;
      else assertEquals(p.colour, o.colour, caption);
      if (p.shape === null) {
        shapeUnsaid++;
        assert(/\bshape\b/.test(caption), caption);
      } else assertEquals(p.shape, o.shape, caption);
      assert(p.colour !== null || p.shape !== null, caption);
    });
  }
  // Each about 0.15 of objects.
  for (const n of [colourUnsaid, shapeUnsaid]) {
    assert(n / objects > 0.12 && n / objects < 0.18, `${n}/${objects}`);
  }
  // An explicit 0 draws nothing extra from the RNG: the same captions as leaving the option out.
  const a = new Rng(3), b = new Rng(3);
  const s = sampleTrainScene(new Rng(4));
  assertEquals(captionOf(s, a), captionOf(s, b, { attributeDropProbability: 0 }));
});

Deno.test("isHeldOutShapeColour: exactly the listed pairs", () => {
  for (const [s, c] of HELD_OUT_SHAPE_COLOURS) assert(isHeldOutShapeColour(s, c), `${s}/${c}`);
  assert(!isHeldOutShapeColour("cross", "purple") && !isHeldOutShapeColour(null, "gray"));
});
