/**
 * ShapesWorld image-variation pairs for training SeeCoder: a scene rendered as the reference, and another
 * scene of the same description as the diffusion target. "The same description" keeps what a caption names
 * (background, and each object's shape, colour, size and texture); what no caption pins down is drawn again:
 * the position jitter, the radius jitter, the rotation, the stripe angle and the texture phase. A one-object
 * scene also moves to another grid cell half of the time (position is an attribute captions often leave
 * unsaid); two objects keep their cells so they still fit side by side.
 *
 * @example
 * ```ts
 * const { reference, target } = variationPair(0, 17, "train");
 * const images = [renderScene(reference, 64), renderScene(target, 64)];
 * ```
 */
import { Rng } from "../random.ts";
import {
  POSITIONS,
  sampleHeldOutScene,
  sampleScene,
  sampleTrainScene,
  type Scene,
  type SceneObject,
} from "../shapesworld/world.ts";

/** The key of the pair stream (Rng.derive(seed, PAIR_STREAM, i)). */
const PAIR_STREAM = 0x5ec0;
/** Chance that a one-object variation moves to another grid cell. */
export const MOVE_PROBABILITY = 0.5;
const MAX_TRIES = 200;

/** Whether two objects' rotated extents leave a gap (the sampler's own rule, with its 0.035 margin). */
function fits(a: SceneObject, b: SceneObject): boolean {
  const ext = (o: SceneObject) =>
    o.radius * (Math.abs(Math.cos(o.rotation)) + Math.abs(Math.sin(o.rotation)));
  const need = ext(a) + ext(b) + 0.035;
  return Math.abs(a.cx - b.cx) >= need || Math.abs(a.cy - b.cy) >= need;
}

/** One object of the same description as `o`, drawn afresh (optionally at another cell). */
function redraw(rng: Rng, background: Scene["background"], o: SceneObject, move: boolean): SceneObject {
  const positions = move ? POSITIONS.filter((p) => p !== o.position) : [o.position];
  return sampleScene(rng, {
    objectCount: 1,
    backgrounds: [background],
    colours: [o.colour],
    shapes: [o.shape],
    sizes: [o.size],
    textures: [o.texture],
    positions,
  }).objects[0];
}

/**
 * Another scene of `scene`'s description (see the module comment): same background and per-object shape,
 * colour, size and texture, fresh geometry. Deterministic given the RNG state.
 */
export function variationOf(scene: Scene, rng: Rng): Scene {
  if (scene.objects.length === 1) {
    const move = rng.uniform() < MOVE_PROBABILITY;
    return { background: scene.background, objects: [redraw(rng, scene.background, scene.objects[0], move)] };
  }
  for (let attempt = 0; attempt < MAX_TRIES; attempt++) {
    const objects = scene.objects.map((o) => redraw(rng, scene.background, o, false));
    if (fits(objects[0], objects[1])) return { background: scene.background, objects };
  }
  return scene;
}

/** A reference scene and its variation. */
export interface VariationPair {
  reference: Scene;
  target: Scene;
}

/**
 * Pair `i` of the seeded pair set: a scene of the split ("train": training split with one object 75% of the
 * time, as pretraining drew; "heldout": held-out attribute combinations, one object) and its variation.
 */
export function variationPair(seed: number, i: number, split: "train" | "heldout" = "train"): VariationPair {
  const rng = Rng.derive(seed, PAIR_STREAM, i);
  const reference = split === "train"
    ? sampleTrainScene(rng, { twoObjectProbability: 0.25 })
    : sampleHeldOutScene(rng, { objectCount: 1, sizes: ["medium", "large"] });
  return { reference, target: variationOf(reference, rng) };
}
