/**
 * A visual slider's pairs from a folder on disk laid out as the sliders repository's: `verylow/`, `low/`,
 * `high/`, `veryhigh/`, images paired by file name (scales -2 -1 1 2; `shared/methods/concept_slider.ts`).
 * What the command line trains from; over HTTP the same layout comes as one zip.
 *
 * @example
 * ```ts
 * const pairs = await folderPairs("data/brightness"); // [{low, high, scale}, ...] decoded
 * ```
 */
import { pairsFromFolders } from "../../shared/methods/concept_slider.ts";
import { JobInputError } from "../input_error.ts";
import { decodeImage } from "../training/data.ts";
import type { SliderPair } from "./concept_slider.ts";

const IMAGE = /\.(png|jpe?g)$/i;

async function imagePaths(root: string, rel = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(rel ? `${root}/${rel}` : root)) {
    const path = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory) out.push(...await imagePaths(root, path));
    else if (e.isFile && IMAGE.test(e.name)) out.push(path);
  }
  return out.sort();
}

/** The decoded pairs of `dir`; an image that cannot be paired is a JobInputError naming it. */
export async function folderPairs(dir: string): Promise<SliderPair[]> {
  const { pairs, problems } = pairsFromFolders(await imagePaths(dir));
  if (problems.length) throw new JobInputError(`${dir}: ${problems.join("; ")}`);
  const load = async (p: string) => decodeImage(await Deno.readFile(`${dir}/${p}`), `${dir}/${p}`);
  return await Promise.all(
    pairs.map(async (p) => ({ low: await load(p.low), high: await load(p.high), scale: p.scale })),
  );
}
