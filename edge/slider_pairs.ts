/**
 * A visual slider's image pairs as the worker leases them: from `input.pairs` (file ids), or from one zip in
 * `input.images` whose folders verylow/low/high/veryhigh are paired by file name (the sliders repository's
 * layout; `shared/methods/concept_slider.ts`). Every pair must be two images of one size; whatever cannot be
 * paired is a 422 naming the entries.
 *
 * @example
 * ```ts
 * work.pairs = await sliderPairs(edge, tenant.id, plan, input);
 * ```
 */
import { type FolderPair, pairsFromFolders } from "../shared/methods/concept_slider.ts";
import type { Edge } from "./context.ts";
import { type BlobPlan, unknownRef } from "./jobs.ts";
import { ApiProblem } from "./problem.ts";
import type { FileRecord } from "./records.ts";

interface SliderImages {
  kind?: string;
  pairs?: FolderPair[];
  images?: string | string[];
}

type Size = { width?: number; height?: number } | null | undefined;

const invalid = (name: string, reason: string) =>
  new ApiProblem(422, "invalid-request", "Invalid request", `${name}: ${reason}`, {
    invalid_fields: [{ name, reason }],
  });

function checkSameSize(field: string, lo: Size, hi: Size): void {
  if (lo?.width && hi?.width && (lo.width !== hi.width || lo.height !== hi.height)) {
    throw invalid(
      field,
      `low is ${lo.width}x${lo.height}, high is ${hi.width}x${hi.height}; a pair must match`,
    );
  }
}

/** The leased `pairs` (blob names), or undefined for a slider that has none (a text slider). */
export async function sliderPairs(
  edge: Edge,
  tenant: string,
  plan: BlobPlan,
  input: SliderImages,
): Promise<FolderPair[] | undefined> {
  const file = (id: string) => edge.metadata.get<FileRecord>(["files", tenant, id]);
  if (input.pairs) {
    const pairs = await Promise.all(input.pairs.map(async (p, i) => ({
      ...p,
      low: await plan.image(p.low, `input.pairs.${i}.low`),
      high: await plan.image(p.high, `input.pairs.${i}.high`),
    })));
    for (const [i, p] of input.pairs.entries()) {
      checkSameSize(`input.pairs.${i}`, await file(p.low), await file(p.high));
    }
    return pairs;
  }
  if (input.kind !== "visual" || input.images === undefined) return undefined;
  const ids = typeof input.images === "string" ? [input.images] : input.images;
  const zip = ids.length === 1 ? await file(ids[0]) : null;
  if (ids.length === 1 && !zip) throw unknownRef("input.images", `no file "${ids[0]}"`);
  if (!zip || zip.kind !== "zip") {
    throw invalid(
      "input.images",
      `a visual slider takes its pairs from one zip with folders verylow/, low/, high/, veryhigh/ (or from input.pairs); got ${
        zip ? `a ${zip.kind} file` : `${ids.length} files`
      }`,
    );
  }
  const entries = new Map((zip.entries ?? []).map((e) => [e.name, e]));
  const { pairs, problems } = pairsFromFolders([...entries.keys()]);
  if (problems.length) {
    const more = problems.length > 5 ? `; and ${problems.length - 5} more` : "";
    throw invalid("input.images", problems.slice(0, 5).join("; ") + more);
  }
  for (const p of pairs) {
    checkSameSize(`input.images (${p.low}, ${p.high})`, entries.get(p.low), entries.get(p.high));
  }
  await plan.images(zip.id, "input.images");
  return pairs.map((p) => ({ ...p, low: `${zip.id}/${p.low}`, high: `${zip.id}/${p.high}` }));
}
