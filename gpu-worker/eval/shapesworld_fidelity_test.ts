/**
 * ShapesWorld subject fidelity and prior drift on rendered scenes: the subject's own images score the maximum,
 * the subject on a new background keeps its attribute agreement, another object scores low; identical image
 * sets have no drift, perturbed ones a little pixel drift and no attribute drift, different scenes more.
 */
import { assert, assertEquals, assertThrows } from "../testing.ts";
import {
  histogramIntersection,
  priorDrift,
  shapesWorldFidelity,
  subjectProfile,
} from "./shapesworld_fidelity.ts";
import { renderScene } from "../shapesworld/render.ts";
import { type ColourName, sampleScene, type SampleSceneOptions, type Scene } from "../shapesworld/world.ts";
import type { RgbImage } from "../image/png.ts";
import { Rng } from "../random.ts";

const SUBJECT: SampleSceneOptions = {
  objectCount: 1,
  shapes: ["star"],
  colours: ["purple"],
  textures: ["checkered"],
  backgrounds: ["white"],
  sizes: ["medium", "large"],
};

function scenes(seed: number, n: number, o: SampleSceneOptions): Scene[] {
  return Array.from({ length: n }, (_, i) => sampleScene(new Rng(seed * 1000 + i), o));
}
const render = (s: Scene[]) => s.map((x) => renderScene(x, 64));
const training = render(scenes(1, 4, SUBJECT));

Deno.test("the subject profile is the majority shape, colour and texture of the training images", () => {
  const p = subjectProfile(training);
  assertEquals([p.shape, p.colour, p.texture], ["star", "purple", "checkered"]);
  assertEquals(p.histograms.length, 4);
  assertThrows(() => subjectProfile([]), RangeError, "at least one");
});

Deno.test("identical images score the maximum; the subject on new backgrounds keeps its attributes", () => {
  const self = shapesWorldFidelity([training[0]], [training[0]]);
  assertEquals([self.shape, self.colour, self.texture, self.score], [1, 1, 1, 1]);

  const set = shapesWorldFidelity(training, training);
  assertEquals([set.shape, set.colour, set.texture], [1, 1, 1]);
  assert(set.histogram > 0.8 && set.score > 0.95, `set: ${JSON.stringify({ ...set, images: undefined })}`);

  // The same subject in a new context: other backgrounds and positions.
  const contexts = render(
    scenes(2, 4, { ...SUBJECT, backgrounds: ["blue", "yellow", "black"] as ColourName[] }),
  );
  const moved = shapesWorldFidelity(contexts, training);
  assertEquals([moved.shape, moved.colour, moved.texture], [1, 1, 1], "attributes ignore the background");
  assert(moved.histogram > 0.6, `object-pixel histograms ignore the background: ${moved.histogram}`);
});

Deno.test("another object scores lower, and lower the fewer attributes it shares", () => {
  const other = render(
    scenes(3, 4, { ...SUBJECT, shapes: ["circle"], colours: ["red"], textures: ["plain"] }),
  );
  const far = shapesWorldFidelity(other, training);
  assertEquals([far.shape, far.colour, far.texture], [0, 0, 0]);
  assert(far.histogram < 0.2 && far.score < 0.1, `far: ${far.score} (histogram ${far.histogram})`);

  const recoloured = render(scenes(4, 4, { ...SUBJECT, colours: ["green"] }));
  const near = shapesWorldFidelity(recoloured, training);
  assertEquals([near.shape, near.colour], [1, 0]);
  assert(far.score < near.score && near.score < 1, `far ${far.score} < near ${near.score} < 1`);

  const blank: RgbImage = { width: 64, height: 64, rgb: new Uint8Array(64 * 64 * 3).fill(245) };
  const none = shapesWorldFidelity([blank], training);
  assertEquals([none.images[0].found, none.score], [false, 0]);
});

Deno.test("histogram intersection is 1 for equal histograms and 0 for disjoint ones", () => {
  assertEquals(histogramIntersection(Float64Array.of(0.5, 0.5, 0), Float64Array.of(0.5, 0.5, 0)), 1);
  assertEquals(histogramIntersection(Float64Array.of(1, 0), Float64Array.of(0, 1)), 0);
});

Deno.test("prior drift: none for identical images, a little pixel drift for noise, more for other scenes", () => {
  const base = render(scenes(5, 4, { objectCount: 1, sizes: ["medium", "large"] }));
  assertEquals(priorDrift(base, base).pixel, 0);
  assertEquals(priorDrift(base, base).attributes, 0);

  const rng = new Rng(9);
  const noisy = base.map((img) => ({
    ...img,
    rgb: img.rgb.map((v) => Math.max(0, Math.min(255, v + Math.round(rng.gauss() * 4)))),
  }));
  const small = priorDrift(base, noisy);
  assert(small.pixel > 0 && small.pixel < 0.03, `noise drift ${small.pixel}`);
  assertEquals(small.attributes, 0, "noise changes no analyzed attribute");

  const other = render(scenes(6, 4, { objectCount: 1, sizes: ["medium", "large"] }));
  const big = priorDrift(base, other);
  assert(
    big.pixel > 5 * small.pixel && big.attributes > 0.4,
    `other scenes: ${big.pixel}, ${big.attributes}`,
  );
  assertThrows(() => priorDrift(base, other.slice(1)), RangeError, "paired");
});
