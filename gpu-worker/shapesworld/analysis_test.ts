import type { RgbImage } from "../image/png.ts";
import { Rng } from "../random.ts";
import { assert, assertEquals } from "../testing.ts";
import { analyzeImage, checkAgainstCaption, nearestColour } from "./analysis.ts";
import { addGaussianNoise, gaussianBlur } from "./degrade.ts";
import { renderScene } from "./render.ts";
import {
  captionOf,
  COLOURS,
  parseCaption,
  sampleScene,
  type SampleSceneOptions,
  type Scene,
  SHAPES,
  TEXTURES,
} from "./world.ts";

type Degrade = (img: RgbImage, rng: Rng) => RgbImage;
const clean: Degrade = (img) => img;
/** Like a small model's output: grain (σ = 10/255) and softness (Gaussian blur, σ = 0.7 px). */
const noisy: Degrade = (img, rng) => gaussianBlur(addGaussianNoise(img, 10, rng), 0.7);

interface Tally {
  scenes: number;
  objects: number;
  background: number;
  count: number;
  colour: number;
  shape: number;
  size: number;
  position: number;
  texture: number;
  shapeConfusion: Record<string, Record<string, number>>;
  textureConfusion: Record<string, Record<string, number>>;
}

function evaluate(n: number, seed: number, opts: SampleSceneOptions, degrade: Degrade): Tally {
  const rng = new Rng(seed);
  const noise = new Rng(seed + 1);
  const t: Tally = {
    scenes: 0,
    objects: 0,
    background: 0,
    count: 0,
    colour: 0,
    shape: 0,
    size: 0,
    position: 0,
    texture: 0,
    shapeConfusion: {},
    textureConfusion: {},
  };
  for (let i = 0; i < n; i++) {
    const scene = sampleScene(rng, opts);
    const a = analyzeImage(degrade(renderScene(scene), noise));
    t.scenes++;
    t.background += a.background === scene.background ? 1 : 0;
    t.count += a.objects.length === scene.objects.length ? 1 : 0;
    for (const o of scene.objects) {
      t.objects++;
      // The found object nearest the true centre.
      const near = (g: (typeof a.objects)[number]) => Math.hypot(g.center[0] - o.cx, g.center[1] - o.cy);
      const g = a.objects.slice().sort((p, q) => near(p) - near(q))[0];
      const got = (k: "colour" | "shape" | "size" | "position" | "texture") =>
        g !== undefined && g[k] === o[k];
      for (const k of ["colour", "shape", "size", "position", "texture"] as const) t[k] += got(k) ? 1 : 0;
      const row = (t.shapeConfusion[o.shape] ??= {});
      row[g?.shape ?? "none"] = (row[g?.shape ?? "none"] ?? 0) + 1;
      const trow = (t.textureConfusion[o.texture] ??= {});
      trow[g?.texture ?? "none"] = (trow[g?.texture ?? "none"] ?? 0) + 1;
    }
  }
  return t;
}

function report(name: string, t: Tally): void {
  const pct = (k: keyof Tally, of: number) => `${k} ${((100 * (t[k] as number)) / of).toFixed(1)}%`;
  console.log(
    `${name}: ${t.scenes} scenes, ${t.objects} objects; ${pct("background", t.scenes)} ${
      pct("count", t.scenes)
    } ` +
      ["colour", "shape", "size", "position", "texture"].map((k) => pct(k as keyof Tally, t.objects)).join(
        " ",
      ),
  );
  for (const s of SHAPES) console.log(`  ${s.padEnd(9)} -> ${JSON.stringify(t.shapeConfusion[s] ?? {})}`);
  for (const s of TEXTURES) console.log(`  ${s.padEnd(9)} -> ${JSON.stringify(t.textureConfusion[s] ?? {})}`);
}

const SINGLE_MEDIUM_LARGE: SampleSceneOptions = { objectCount: 1, sizes: ["medium", "large"] };

Deno.test("analysis: clean single medium/large objects: background 100%, colour ≥ 99%, shape ≥ 95%", () => {
  const t = evaluate(300, 100, SINGLE_MEDIUM_LARGE, clean);
  report("clean, one medium/large object", t);
  assertEquals(t.background, t.scenes);
  assertEquals(t.count, t.scenes);
  assert(t.colour >= 0.99 * t.objects, "colour");
  assert(t.shape >= 0.95 * t.objects, "shape");
  assert(t.size >= 0.98 * t.objects && t.position >= 0.98 * t.objects, "size/position");
  assert(t.texture >= 0.9 * t.objects, "texture");
  for (const s of SHAPES) {
    const row = t.shapeConfusion[s];
    assert((row[s] ?? 0) >= 0.9 * Object.values(row).reduce((a, b) => a + b, 0), `shape ${s}`);
  }
});

Deno.test("analysis: stays good with noise (σ 10/255) and blur (σ 0.7 px)", () => {
  const t = evaluate(300, 200, SINGLE_MEDIUM_LARGE, noisy);
  report("noisy+blurred, one medium/large object", t);
  assertEquals(t.background, t.scenes);
  assert(t.count >= 0.99 * t.scenes, "count");
  assert(t.colour >= 0.99 * t.objects, "colour");
  assert(t.shape >= 0.95 * t.objects, "shape");
  assert(t.size >= 0.97 * t.objects && t.position >= 0.97 * t.objects, "size/position");
  assert(t.texture >= 0.85 * t.objects, "texture");
});

Deno.test("analysis: small objects and two-object scenes, clean and noisy", () => {
  const small = evaluate(120, 300, { objectCount: 1, sizes: ["small"] }, noisy);
  report("noisy+blurred, one small object", small);
  assert(small.colour >= 0.98 * small.objects && small.shape >= 0.9 * small.objects, "small");
  for (const [name, degrade] of [["clean", clean], ["noisy+blurred", noisy]] as const) {
    const two = evaluate(120, 400, { objectCount: 2 }, degrade);
    report(`${name}, two objects`, two);
    assertEquals(two.background, two.scenes);
    assert(two.count >= 0.97 * two.scenes, "count");
    assert(two.colour >= 0.97 * two.objects && two.shape >= 0.93 * two.objects, "two objects");
    assert(two.position >= 0.97 * two.objects, "two objects' positions");
  }
});

Deno.test("analysis: an empty background has no objects; nearestColour snaps to the palette", () => {
  for (const c of COLOURS) {
    const img = renderScene({ background: c, objects: [] });
    const a = analyzeImage(noisy(img, new Rng(1)));
    assertEquals([a.background, a.objects.length], [c, 0]);
  }
  assertEquals(nearestColour([200, 40, 30]), "red");
  assertEquals(nearestColour([100, 100, 110]), "gray");
});

Deno.test("checkAgainstCaption: faithful images pass; a wrong colour, shape or background is caught", () => {
  const rng = new Rng(500);
  let all = 0;
  const n = 120;
  for (let i = 0; i < n; i++) {
    const scene: Scene = sampleScene(rng, { sizes: ["medium", "large"] });
    const img = noisy(renderScene(scene), rng);
    const caption = captionOf(scene, rng);
    const check = checkAgainstCaption(img, parseCaption(caption));
    assertEquals(
      [check.background, check.colour, check.shape, check.count],
      [true, true, true, true],
      caption,
    );
    all += check.all ? 1 : 0;

    const a = check.analysis;
    const o = scene.objects[0];
    const otherColour = COLOURS.find((c) =>
      c !== o.colour && c !== scene.background && scene.objects.every((x) => x.colour !== c)
    )!;
    const otherShape = SHAPES.find((s) => scene.objects.every((x) => x.shape !== s))!;
    const otherBackground = COLOURS.find((c) =>
      scene.objects.every((x) => x.colour !== c) && c !== scene.background
    )!;
    const swap = (from: string, to: string) => caption.replace(new RegExp(`\\b${from}\\b`), to);
    assertEquals(checkAgainstCaption(a, parseCaption(swap(o.colour, otherColour))).colour, false);
    assertEquals(checkAgainstCaption(a, parseCaption(swap(o.shape, otherShape))).shape, false);
    const wrongBg = caption.replace(/\w+ background$/, `${otherBackground} background`);
    assertEquals(checkAgainstCaption(a, parseCaption(wrongBg)).background, false);
    assertEquals(checkAgainstCaption(a, parseCaption(wrongBg)).all, false);
  }
  console.log(`checkAgainstCaption: ${all}/${n} noisy images pass every named attribute`);
  assert(all >= 0.9 * n, `${all}/${n}`);
  // Counting: a caption naming two objects fails on a one-object image, and unnamed attributes are null.
  const one = renderScene(sampleScene(new Rng(3), { objectCount: 1 }));
  const c = checkAgainstCaption(one, parseCaption("a red circle and a blue square, white background"));
  assertEquals([c.count, c.all, c.objects[1].found], [false, false, false]);
  assertEquals([c.size, c.position, c.texture], [null, null, null]);
});
