import { Rng } from "../random.ts";
import { assert, assertEquals } from "../testing.ts";
import { renderScene, textureColour } from "./render.ts";
import { COLOURS, PALETTE, type Rgb, sampleScene, type Scene } from "./world.ts";

const dist = (a: Rgb, b: Rgb) => Math.hypot(a[0] - b[0], a[1] - b[1], a[2] - b[2]);

function counts(img: { rgb: Uint8Array }): Map<string, number> {
  const m = new Map<string, number>();
  for (let i = 0; i < img.rgb.length; i += 3) {
    const k = `${img.rgb[i]},${img.rgb[i + 1]},${img.rgb[i + 2]}`;
    m.set(k, (m.get(k) ?? 0) + 1);
  }
  return m;
}

// Speed is not asserted here (a loaded machine made this flaky): the render rate is a benchmark's business.
Deno.test("render: deterministic bytes over 1000 scenes", () => {
  const rng = new Rng(1);
  const scenes = Array.from({ length: 1000 }, () => sampleScene(rng));
  const imgs = scenes.map((s) => renderScene(s));
  for (let i = 0; i < 50; i++) assertEquals(renderScene(scenes[i]).rgb, imgs[i].rgb);
  assertEquals([imgs[0].width, imgs[0].height, imgs[0].rgb.length], [64, 64, 64 * 64 * 3]);
  const big = renderScene(scenes[0], 128, { supersample: 2 });
  assertEquals([big.width, big.rgb.length], [128, 128 * 128 * 3]);
});

Deno.test("render: the background fills the rest; the object's dominant colour is its palette colour", () => {
  const rng = new Rng(2);
  for (let i = 0; i < 300; i++) {
    const scene: Scene = sampleScene(rng, { objectCount: 1 });
    const img = renderScene(scene);
    const c = counts(img);
    const [o] = scene.objects;
    const bg = c.get(PALETTE[scene.background].join(",")) ?? 0;
    assert(bg > 4096 * 0.5, "the background covers most of the image");
    // Of the object's (nearly) pure pixels, those of its colour outnumber those of its texture shade
    // (checkers split about evenly, so at least 30% there).
    const base = PALETTE[o.colour];
    const over = textureColour(o.colour, scene.background);
    let [nBase, nOver] = [0, 0];
    for (let p = 0; p < img.rgb.length; p += 3) {
      const px: Rgb = [img.rgb[p], img.rgb[p + 1], img.rgb[p + 2]];
      if (dist(px, base) < 30) nBase++;
      else if (dist(px, over) < 30) nOver++;
    }
    const share = nBase / (nBase + nOver);
    assert(
      share >= (o.texture === "checkered" ? 0.3 : o.size === "small" ? 0.4 : 0.5),
      `${o.texture} ${o.size}: ${share}`,
    );
    if (o.texture === "plain") {
      // A plain object's pixels are all blends of its colour and the background.
      const bgc = PALETTE[scene.background];
      for (let p = 0; p < img.rgb.length; p += 3) {
        const v = [0, 1, 2].map((k) => base[k] - bgc[k]);
        const q = [0, 1, 2].map((k) => img.rgb[p + k] - bgc[k]);
        const t = Math.max(
          0,
          Math.min(1, (v[0] * q[0] + v[1] * q[1] + v[2] * q[2]) / (v[0] ** 2 + v[1] ** 2 + v[2] ** 2)),
        );
        assert(
          Math.hypot(q[0] - t * v[0], q[1] - t * v[1], q[2] - t * v[2]) < 1.5,
          "plain pixel off the blend line",
        );
      }
    }
    // Anti-aliasing: some pixels blend object and background.
    assert(c.size > (o.texture === "plain" ? 2 : 3), "no anti-aliased pixels");
    const corners = [0, 63 * 3, 63 * 64 * 3, (64 * 64 - 1) * 3];
    for (const k of corners) assertEquals([...img.rgb.slice(k, k + 3)], [...PALETTE[scene.background]]);
  }
});

Deno.test("render: texture shades contrast with both the object and the background", () => {
  for (const o of COLOURS) {
    for (const b of COLOURS) {
      if (o === b) continue;
      const t = textureColour(o, b);
      assert(dist(t, PALETTE[o]) >= 60 && dist(t, PALETTE[b]) >= 60, `${o} on ${b}: ${t}`);
    }
  }
  assertEquals(textureColour("red", "blue"), [121, 11, 11]);
});
