/**
 * The ShapesWorld dataset: captioned images made on demand from (seed, index), each item independent of the
 * others (its own RNG seeded by a hash of both), training split by default; and a writer that puts items in
 * a folder as PNG + caption .txt pairs with a `metadata.jsonl` (Hugging Face imagefolder layout).
 *
 * @example
 * ```ts
 * const ds = new ShapesWorldDataset({ seed: 1 });
 * const { image, caption } = ds.item(42); // same bytes and words on every call and machine
 * await writeShapesWorldFolder("data/shapes", 1000, { seed: 1 });
 * ```
 */
import { encodePng, type RgbImage } from "../image/png.ts";
import { Rng } from "../random.ts";
import { renderScene } from "./render.ts";
import {
  captionOf,
  type CaptionOptions,
  sampleHeldOutScene,
  sampleScene,
  type SampleSceneOptions,
  sampleTrainScene,
  type Scene,
} from "./world.ts";

/** Which scenes a dataset draws: the training split, the held-out split, or both. */
export type ShapesWorldSplit = "train" | "heldout" | "all";

/** Options of {@link ShapesWorldDataset}. */
export interface ShapesWorldDatasetOptions {
  /** Dataset seed (default 0). */
  seed?: number;
  /** Default "train". */
  split?: ShapesWorldSplit;
  /** Image side in pixels (default 64). */
  size?: number;
  /** Restrictions on the scenes (see {@link sampleScene}). */
  scene?: SampleSceneOptions;
  /** Caption dropout and prefixes (see {@link captionOf}). */
  caption?: CaptionOptions;
}

/** One dataset item. */
export interface ShapesWorldItem {
  index: number;
  image: RgbImage;
  caption: string;
  /** The scene drawn, with its full attributes (the caption may leave some unsaid). */
  scene: Scene;
}

function mix32(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

/**
 * The RNG seed of item `index` of the dataset with seed `seed`: a 32-bit hash of both.
 *
 * @example
 * ```ts
 * new Rng(itemSeed(1, 42)); // the RNG item 42 is drawn with
 * ```
 */
export function itemSeed(seed: number, index: number): number {
  const s = mix32((seed >>> 0) ^ mix32(Math.floor(seed / 4294967296) + 0x6a09e667));
  const i = mix32(((index >>> 0) + 0x9e3779b9) >>> 0) ^ mix32(Math.floor(index / 4294967296) + 0xbb67ae85);
  return mix32(s ^ i);
}

/**
 * Captioned ShapesWorld images by index. Item i is a pure function of (seed, i, options): its scene is drawn
 * from its own RNG (split respected), then its caption from the same RNG, then it is rendered.
 *
 * @example
 * ```ts
 * const ds = new ShapesWorldDataset({ seed: 7, split: "heldout" });
 * for (const { image, caption } of ds.items(0, 8)) console.log(caption, image.width);
 * ```
 */
export class ShapesWorldDataset {
  readonly seed: number;
  readonly split: ShapesWorldSplit;
  readonly size: number;
  private readonly sceneOptions: SampleSceneOptions;
  private readonly captionOptions: CaptionOptions;

  constructor(opts: ShapesWorldDatasetOptions = {}) {
    this.seed = opts.seed ?? 0;
    this.split = opts.split ?? "train";
    this.size = opts.size ?? 64;
    this.sceneOptions = opts.scene ?? {};
    this.captionOptions = opts.caption ?? {};
  }

  /** Scene and caption of item `index`, without rendering. */
  describe(index: number): { scene: Scene; caption: string } {
    if (!Number.isSafeInteger(index) || index < 0) throw new RangeError(`bad item index ${index}`);
    const rng = new Rng(itemSeed(this.seed, index));
    const sample = this.split === "train"
      ? sampleTrainScene
      : this.split === "heldout"
      ? sampleHeldOutScene
      : sampleScene;
    const scene = sample(rng, this.sceneOptions);
    return { scene, caption: captionOf(scene, rng, this.captionOptions) };
  }

  /** Item `index`: image, caption and scene. */
  item(index: number): ShapesWorldItem {
    const { scene, caption } = this.describe(index);
    return { index, image: renderScene(scene, this.size), caption, scene };
  }

  /** Items `start`, `start + 1`, ... (`count` of them), made lazily. */
  *items(start: number, count: number): Generator<ShapesWorldItem> {
    for (let i = start; i < start + count; i++) yield this.item(i);
  }
}

/** Options of {@link writeShapesWorldFolder}. */
export interface WriteFolderOptions extends ShapesWorldDatasetOptions {
  /** First item index (default 0). */
  start?: number;
}

/**
 * Writes items `start .. start + count - 1` into `dir` (created if needed) as `NNNNNN.png` and `NNNNNN.txt`
 * (the caption) pairs, plus `metadata.jsonl` with `{"file_name", "text"}` lines for Hugging Face's
 * imagefolder loader. Returns the file stems written.
 *
 * @example
 * ```ts
 * await writeShapesWorldFolder("data/train", 5000, { seed: 1 });
 * ```
 */
export async function writeShapesWorldFolder(
  dir: string,
  count: number,
  opts: WriteFolderOptions = {},
): Promise<string[]> {
  await Deno.mkdir(dir, { recursive: true });
  const ds = new ShapesWorldDataset(opts);
  const start = opts.start ?? 0;
  const digits = Math.max(6, String(start + count - 1).length);
  const stems: string[] = [];
  const metadata: string[] = [];
  for (const { index, image, caption } of ds.items(start, count)) {
    const stem = String(index).padStart(digits, "0");
    await Deno.writeFile(`${dir}/${stem}.png`, encodePng(image));
    await Deno.writeTextFile(`${dir}/${stem}.txt`, caption + "\n");
    metadata.push(JSON.stringify({ file_name: `${stem}.png`, text: caption }));
    stems.push(stem);
  }
  await Deno.writeTextFile(`${dir}/metadata.jsonl`, metadata.join("\n") + "\n");
  return stems;
}
