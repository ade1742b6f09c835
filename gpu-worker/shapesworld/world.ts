/**
 * ShapesWorld scenes and captions: a seeded sampler of scenes (a background colour and one or two coloured,
 * sized, placed and textured shapes), the caption grammar that describes them, its parser, and the held-out
 * split of attribute combinations that training never sees.
 *
 * @example
 * ```ts
 * const rng = new Rng(1);
 * const scene = sampleTrainScene(rng);
 * const caption = captionOf(scene, rng); // e.g. "a large striped red circle on the left, blue background"
 * parseCaption(caption).objects[0].shape; // "circle"
 * ```
 */
import type { Rng } from "../random.ts";

/** The palette's colour names (all in the ShapesWorld vocabulary; captions say "gray", never "grey"). */
export const COLOURS = [
  "red",
  "green",
  "blue",
  "yellow",
  "purple",
  "orange",
  "white",
  "black",
  "pink",
  "cyan",
  "brown",
  "gray",
] as const;
/** A palette colour. */
export type ColourName = typeof COLOURS[number];

/** An 8-bit RGB triple. */
export type Rgb = readonly [number, number, number];

/**
 * Exact RGB of every palette colour, as rendered. Any two are at least 109 apart (Euclidean, 0-255 units).
 *
 * @example
 * ```ts
 * PALETTE.red; // [220, 20, 20]
 * ```
 */
export const PALETTE: Readonly<Record<ColourName, Rgb>> = {
  red: [220, 20, 20],
  green: [30, 170, 40],
  blue: [30, 60, 230],
  yellow: [250, 230, 40],
  purple: [140, 30, 180],
  orange: [255, 128, 0],
  white: [245, 245, 245],
  black: [15, 15, 15],
  pink: [250, 130, 190],
  cyan: [30, 210, 230],
  brown: [120, 70, 25],
  gray: [128, 128, 128],
};

/** The shapes ShapesWorld draws (each reliably told apart at 64x64, see `analysis.ts`). */
export const SHAPES = [
  "circle",
  "square",
  "triangle",
  "star",
  "cross",
  "ring",
  "diamond",
  "heart",
  "crescent",
  "arrow",
] as const;
/** A drawable shape. */
export type ShapeName = typeof SHAPES[number];

/** Size words. */
export const SIZES = ["small", "medium", "large"] as const;
/** A size word. */
export type SizeName = typeof SIZES[number];

/**
 * Half the larger side of an object's unrotated bounding box, as a fraction of the image side, per size (the
 * sampler jitters it by up to ±{@link RADIUS_JITTER}).
 */
export const SIZE_RADIUS: Readonly<Record<SizeName, number>> = { small: 0.105, medium: 0.16, large: 0.225 };
/** Relative jitter of an object's radius around {@link SIZE_RADIUS}. */
export const RADIUS_JITTER = 0.05;

/** Positions: a 3x3 grid. */
export const POSITIONS = [
  "center",
  "left",
  "right",
  "top",
  "bottom",
  "upper left",
  "upper right",
  "lower left",
  "lower right",
] as const;
/** A position on the 3x3 grid. */
export type PositionName = typeof POSITIONS[number];

/** Grid coordinates (fractions of the image side) of the three columns and rows. */
export const GRID = [0.27, 0.5, 0.73] as const;
/** Largest offset of an object's centre from its grid point, as a fraction of the image side. */
export const POSITION_JITTER = 0.02;
/** Largest rotation jitter, in radians (6 degrees); shapes stay upright (a diamond never becomes a square). */
export const ROTATION_JITTER = (6 * Math.PI) / 180;

/** Textures. */
export const TEXTURES = ["plain", "striped", "dotted", "checkered"] as const;
/** A texture. */
export type TextureName = typeof TEXTURES[number];

/**
 * The grid cell of each position: column (0 left, 1 centre, 2 right) and row (0 top, 1 middle, 2 bottom).
 *
 * @example
 * ```ts
 * POSITION_CELL["upper right"]; // [2, 0]
 * ```
 */
export const POSITION_CELL: Readonly<Record<PositionName, readonly [number, number]>> = {
  "center": [1, 1],
  "left": [0, 1],
  "right": [2, 1],
  "top": [1, 0],
  "bottom": [1, 2],
  "upper left": [0, 0],
  "upper right": [2, 0],
  "lower left": [0, 2],
  "lower right": [2, 2],
};

/**
 * The position naming a grid cell.
 *
 * @example
 * ```ts
 * positionOfCell(0, 2); // "lower left"
 * ```
 */
export function positionOfCell(column: number, row: number): PositionName {
  for (const p of POSITIONS) {
    const [c, r] = POSITION_CELL[p];
    if (c === column && r === row) return p;
  }
  throw new RangeError(`no grid cell (${column}, ${row})`);
}

/** One object of a scene: its named attributes and the exact geometry the renderer draws. */
export interface SceneObject {
  shape: ShapeName;
  colour: ColourName;
  size: SizeName;
  position: PositionName;
  texture: TextureName;
  /** Centre, fractions of the image side (x right, y down). */
  cx: number;
  cy: number;
  /** Half the larger side of the unrotated bounding box, fraction of the image side. */
  radius: number;
  /** Clockwise rotation in radians, within ±{@link ROTATION_JITTER}. */
  rotation: number;
  /** Stripe direction in radians (0, π/4, π/2 or 3π/4); unused by other textures. */
  textureAngle: number;
  /** Offset of the texture pattern, in periods, in [0, 1). */
  texturePhase: number;
}

/** A ShapesWorld scene: a plain background and one or two non-overlapping objects of distinct colours. */
export interface Scene {
  background: ColourName;
  objects: SceneObject[];
}

/** Restrictions for {@link sampleScene}; each list limits the choices of that attribute (default: all). */
export interface SampleSceneOptions {
  /** Number of objects; default: 2 with probability `twoObjectProbability`, else 1. */
  objectCount?: 1 | 2;
  /** Chance of two objects when `objectCount` is not given (default 0.35). */
  twoObjectProbability?: number;
  backgrounds?: readonly ColourName[];
  colours?: readonly ColourName[];
  shapes?: readonly ShapeName[];
  sizes?: readonly SizeName[];
  positions?: readonly PositionName[];
  textures?: readonly TextureName[];
}

/** Gap left between the bounding extents of two objects, fraction of the image side (about 2 px at 64). */
const MIN_GAP = 0.035;
const MAX_TRIES = 10000;
/** Least distance from an object's rotated extent to the image edge, fraction of the image side. */
const EDGE_MARGIN = 0.008;

function pick<T>(rng: Rng, xs: readonly T[]): T {
  if (xs.length === 0) throw new RangeError("sampleScene: an attribute has no allowed values");
  return xs[rng.int(xs.length)];
}

function jitter(rng: Rng, amount: number): number {
  return (2 * rng.uniform() - 1) * amount;
}

function sampleObject(
  rng: Rng,
  opts: SampleSceneOptions,
  colour: ColourName,
  position: PositionName,
): SceneObject {
  const shape = pick(rng, opts.shapes ?? SHAPES);
  const size = pick(rng, opts.sizes ?? SIZES);
  const texture = pick(rng, opts.textures ?? TEXTURES);
  const [col, row] = POSITION_CELL[position];
  const radius = SIZE_RADIUS[size] * (1 + jitter(rng, RADIUS_JITTER));
  const rotation = jitter(rng, ROTATION_JITTER);
  // Keep the rotated shape inside the image (a large square in a corner would otherwise touch the edge).
  const reach = radius * (Math.abs(Math.cos(rotation)) + Math.abs(Math.sin(rotation))) + EDGE_MARGIN;
  const clamp = (v: number) => Math.min(1 - reach, Math.max(reach, v));
  const cx = clamp(GRID[col] + jitter(rng, POSITION_JITTER));
  const cy = clamp(GRID[row] + jitter(rng, POSITION_JITTER));
  const textureAngle = (rng.int(4) * Math.PI) / 4;
  const texturePhase = rng.uniform();
  return { shape, colour, size, position, texture, cx, cy, radius, rotation, textureAngle, texturePhase };
}

/** Whether two grid positions are two cells apart along some axis (so two objects there can fit). */
function farApart(a: PositionName, b: PositionName): boolean {
  const [ca, ra] = POSITION_CELL[a];
  const [cb, rb] = POSITION_CELL[b];
  return Math.abs(ca - cb) === 2 || Math.abs(ra - rb) === 2;
}

/** Whether two objects' rotated extents (bounded by radius·√2 on the far-apart axis) leave a gap. */
function fits(a: SceneObject, b: SceneObject): boolean {
  const ext = (o: SceneObject) =>
    o.radius * (Math.abs(Math.cos(o.rotation)) + Math.abs(Math.sin(o.rotation)));
  const need = ext(a) + ext(b) + MIN_GAP;
  return Math.abs(a.cx - b.cx) >= need || Math.abs(a.cy - b.cy) >= need;
}

/**
 * Samples a scene: background, then objects whose colours differ from it and from each other. Two objects sit
 * on grid positions two cells apart along some axis, and sizes are redrawn until they do not overlap (so two
 * large objects never share a scene). Deterministic given the RNG state.
 *
 * @example
 * ```ts
 * const scene = sampleScene(new Rng(3), { objectCount: 1, sizes: ["medium", "large"] });
 * ```
 */
export function sampleScene(rng: Rng, opts: SampleSceneOptions = {}): Scene {
  const count = opts.objectCount ?? (rng.uniform() < (opts.twoObjectProbability ?? 0.35) ? 2 : 1);
  const positions = opts.positions ?? POSITIONS;
  for (let attempt = 0; attempt < MAX_TRIES; attempt++) {
    const background = pick(rng, opts.backgrounds ?? COLOURS);
    const colours = (opts.colours ?? COLOURS).filter((c) => c !== background);
    if (colours.length < count) continue;
    const c1 = pick(rng, colours);
    const p1 = pick(rng, positions);
    const first = sampleObject(rng, opts, c1, p1);
    if (count === 1) return { background, objects: [first] };
    const others = colours.filter((c) => c !== c1);
    const farPositions = positions.filter((p) => farApart(p1, p));
    if (others.length === 0 || farPositions.length === 0) continue;
    const second = sampleObject(rng, opts, pick(rng, others), pick(rng, farPositions));
    if (fits(first, second)) return { background, objects: [first, second] };
  }
  throw new RangeError("sampleScene: the options leave no scene to sample");
}

/**
 * Held-out (shape, colour) pairs: each colour once, 12 of the 120 pairs (10%). No training scene has an
 * object of one of these shapes in that colour.
 */
export const HELD_OUT_SHAPE_COLOURS: readonly (readonly [ShapeName, ColourName])[] = [
  ["circle", "yellow"],
  ["square", "pink"],
  ["triangle", "green"],
  ["star", "white"],
  ["cross", "gray"],
  ["ring", "purple"],
  ["diamond", "cyan"],
  ["heart", "blue"],
  ["crescent", "black"],
  ["arrow", "red"],
  ["star", "orange"],
  ["triangle", "brown"],
];

/**
 * Held-out (object colour, background colour) pairs: each colour once as object and once as background,
 * 12 of the 132 pairs (9%). No training scene has an object of that colour on that background.
 */
export const HELD_OUT_COLOUR_BACKGROUNDS: readonly (readonly [ColourName, ColourName])[] = COLOURS.map(
  (c, i) => [c, COLOURS[(i + 5) % COLOURS.length]] as const,
);

const heldShapeColour = new Set(HELD_OUT_SHAPE_COLOURS.map(([s, c]) => `${s}/${c}`));

/**
 * Whether (shape, colour) is one of {@link HELD_OUT_SHAPE_COLOURS}.
 *
 * @example
 * ```ts
 * isHeldOutShapeColour("cross", "gray"); // true
 * ```
 */
export function isHeldOutShapeColour(shape: ShapeName | null, colour: ColourName | null): boolean {
  return heldShapeColour.has(`${shape}/${colour}`);
}
const heldColourBackground = new Set(HELD_OUT_COLOUR_BACKGROUNDS.map(([c, b]) => `${c}/${b}`));

/**
 * Whether a scene (or parsed caption) belongs to the held-out split: some object has a held-out (shape,
 * colour) pair, or a held-out (colour, background) pair. Sizes, positions and textures do not matter.
 * Attributes that are null (not named by a caption) match nothing.
 *
 * @example
 * ```ts
 * isHeldOut({ background: "black", objects: [{ shape: "circle", colour: "yellow" }] }); // true
 * ```
 */
export function isHeldOut(
  scene: {
    background: ColourName | null;
    objects: readonly { shape: ShapeName | null; colour: ColourName | null }[];
  },
): boolean {
  return scene.objects.some((o) =>
    isHeldOutShapeColour(o.shape, o.colour) ||
    heldColourBackground.has(`${o.colour}/${scene.background}`)
  );
}

function sampleWhere(rng: Rng, opts: SampleSceneOptions, heldOut: boolean): Scene {
  for (let attempt = 0; attempt < MAX_TRIES; attempt++) {
    const scene = sampleScene(rng, opts);
    if (isHeldOut(scene) === heldOut) return scene;
  }
  throw new RangeError(`no ${heldOut ? "held-out" : "training"} scene satisfies the options`);
}

/**
 * Samples a scene of the training split (rejection sampling of {@link sampleScene}).
 *
 * @example
 * ```ts
 * isHeldOut(sampleTrainScene(new Rng(5))); // false
 * ```
 */
export function sampleTrainScene(rng: Rng, opts: SampleSceneOptions = {}): Scene {
  return sampleWhere(rng, opts, false);
}

/**
 * Samples a scene of the held-out split (rejection sampling of {@link sampleScene}).
 *
 * @example
 * ```ts
 * isHeldOut(sampleHeldOutScene(new Rng(5))); // true
 * ```
 */
export function sampleHeldOutScene(rng: Rng, opts: SampleSceneOptions = {}): Scene {
  return sampleWhere(rng, opts, true);
}

/** Options of {@link captionOf}. */
export interface CaptionOptions {
  /** Chance that each object's size, texture and position are (independently) left unsaid; default 0.3. */
  dropProbability?: number;
  /** Chance of a prefix such as "a photo of"; default 0.15. */
  prefixProbability?: number;
  /**
   * Chance that each object's colour or its shape (one of the two, evenly) is left unsaid; default 0. An
   * unsaid shape is said as "shape" ("a red shape"), an unsaid colour is just dropped ("a cross"). Pretraining
   * uses it so the model reads colour from the colour word and shape from the shape word instead of from their
   * pairing, which held-out pairs break.
   */
  attributeDropProbability?: number;
  /** Leave every object's position unsaid (e.g. for a description that holds across renders that move it). */
  omitPosition?: boolean;
}

/** Prefixes {@link captionOf} may put before a caption. */
export const CAPTION_PREFIXES = ["a photo of", "an image of", "a picture of", "a drawing of"] as const;

const POSITION_PHRASE: Readonly<Record<PositionName, string>> = {
  "center": "in the center",
  "left": "on the left",
  "right": "on the right",
  "top": "at the top",
  "bottom": "at the bottom",
  "upper left": "on the upper left",
  "upper right": "on the upper right",
  "lower left": "on the lower left",
  "lower right": "on the lower right",
};

function article(next: string): string {
  return /^[aeiou]/.test(next) ? "an" : "a";
}

function describe(
  o: SceneObject,
  rng: Rng | undefined,
  drop: number,
  attributeDrop: number,
  omitPosition: boolean,
): string {
  const keep = () => rng === undefined || rng.uniform() >= drop;
  const words: string[] = [];
  if (keep()) words.push(o.size);
  if (keep()) words.push(o.texture);
  // Drawn only when asked for, so captions without attribute dropout keep their random stream.
  const unsaid = rng !== undefined && attributeDrop > 0 && rng.uniform() < attributeDrop
    ? (rng.uniform() < 0.5 ? "colour" : "shape")
    : null;
  if (unsaid !== "colour") words.push(o.colour);
  words.push(unsaid === "shape" ? "shape" : o.shape);
  const phrase = keep() && !omitPosition ? " " + POSITION_PHRASE[o.position] : "";
  return `${article(words[0])} ${words.join(" ")}${phrase}`;
}

/**
 * Describes a scene in the caption grammar:
 * `[prefix] object [and object], <colour> background`, where object is
 * `a|an [size] [texture] <colour> <shape> [position phrase]`. The background is always named; with an RNG,
 * size, texture and position are each dropped with `dropProbability`, a prefix added with `prefixProbability`,
 * and the colour or the shape left unsaid with `attributeDropProbability` (default 0: both always named);
 * without one the caption names everything and has no prefix.
 *
 * @example
 * ```ts
 * captionOf(scene); // "a small striped green star at the top and a medium plain yellow square on the right, black background"
 * captionOf(scene, rng); // "a small green star at the top and a yellow square on the right, black background"
 * ```
 */
export function captionOf(scene: Scene, rng?: Rng, opts: CaptionOptions = {}): string {
  const drop = opts.dropProbability ?? 0.3;
  const attributeDrop = opts.attributeDropProbability ?? 0;
  const objects = scene.objects.map((o) => describe(o, rng, drop, attributeDrop, !!opts.omitPosition)).join(
    " and ",
  );
  let prefix = "";
  if (rng !== undefined && rng.uniform() < (opts.prefixProbability ?? 0.15)) {
    prefix = CAPTION_PREFIXES[rng.int(CAPTION_PREFIXES.length)] + " ";
  }
  return `${prefix}${objects}, ${scene.background} background`;
}

/** One object as a caption names it; attributes the caption leaves unsaid are null. */
export interface ParsedObject {
  shape: ShapeName | null;
  colour: ColourName | null;
  size: SizeName | null;
  position: PositionName | null;
  texture: TextureName | null;
}

/** What {@link parseCaption} recovers from a caption. */
export interface ParsedCaption {
  /** The colour before "background", or null. */
  background: ColourName | null;
  /** The objects in caption order (split at "and"); segments naming neither shape nor colour are skipped. */
  objects: ParsedObject[];
  /** Words outside the grammar (e.g. a rare identifier such as "sks"), in order. */
  other: string[];
}

const COLOUR_WORDS: Readonly<Record<string, ColourName>> = {
  ...Object.fromEntries(COLOURS.map((c) => [c, c])),
  grey: "gray",
};
const SHAPE_WORDS: Readonly<Record<string, ShapeName>> = Object.fromEntries(SHAPES.map((s) => [s, s]));
const SIZE_WORDS: Readonly<Record<string, SizeName>> = {
  small: "small",
  tiny: "small",
  medium: "medium",
  large: "large",
  big: "large",
  huge: "large",
};
const TEXTURE_WORDS: Readonly<Record<string, TextureName>> = {
  plain: "plain",
  solid: "plain",
  striped: "striped",
  dotted: "dotted",
  checkered: "checkered",
};
const GLUE = new Set([
  "a",
  "an",
  "the",
  "on",
  "in",
  "at",
  "of",
  "with",
  "photo",
  "image",
  "picture",
  "drawing",
  "far",
  "away",
  "side",
  "corner",
  "shape",
  "object",
]);

function parseObject(words: string[], other: string[]): ParsedObject | null {
  const o: ParsedObject = { shape: null, colour: null, size: null, position: null, texture: null };
  let column: number | null = null;
  let row: number | null = null;
  for (const w of words) {
    if (w in SHAPE_WORDS) o.shape = SHAPE_WORDS[w];
    else if (w in COLOUR_WORDS) o.colour = COLOUR_WORDS[w];
    else if (w in SIZE_WORDS) o.size = SIZE_WORDS[w];
    else if (w in TEXTURE_WORDS) o.texture = TEXTURE_WORDS[w];
    else if (w === "left") column = 0;
    else if (w === "right") column = 2;
    else if (w === "top" || w === "upper") row = 0;
    else if (w === "bottom" || w === "lower") row = 2;
    else if (w === "center" || w === "middle") column ??= 1;
    else if (!GLUE.has(w)) other.push(w);
  }
  if (column !== null || row !== null) o.position = positionOfCell(column ?? 1, row ?? 1);
  return o.shape === null && o.colour === null ? null : o;
}

/**
 * Recovers the named attributes from a caption of the grammar of {@link captionOf} (lenient: any word order
 * within an object, synonyms such as "grey", "big", "tiny", "middle", "solid"; unknown words are collected in
 * `other`). Round-trips `captionOf`: each named attribute comes back, unnamed ones are null.
 *
 * @example
 * ```ts
 * parseCaption("a large red circle on the left, blue background");
 * // { background: "blue", objects: [{ shape: "circle", colour: "red", size: "large", position: "left",
 * //   texture: null }], other: [] }
 * ```
 */
export function parseCaption(text: string): ParsedCaption {
  const words = text.toLowerCase().replace(/[,.]/g, " ").split(/\s+/).filter((w) => w.length > 0);
  let background: ColourName | null = null;
  const rest: string[] = [];
  for (let i = 0; i < words.length; i++) {
    if (words[i] === "background") {
      const prev = rest.at(-1);
      if (prev !== undefined && prev in COLOUR_WORDS) {
        background = COLOUR_WORDS[prev];
        rest.pop();
      }
      continue;
    }
    rest.push(words[i]);
  }
  const other: string[] = [];
  const objects: ParsedObject[] = [];
  let segment: string[] = [];
  const flush = () => {
    const o = parseObject(segment, other);
    if (o) objects.push(o);
    segment = [];
  };
  for (const w of rest) {
    if (w === "and") flush();
    else segment.push(w);
  }
  flush();
  return { background, objects, other };
}
