/**
 * File-system helpers shared by loaders and CLIs.
 *
 * @example
 * ```ts
 * if (await pathExists("models/tiny-shapes/model_index.json")) console.log("a model folder");
 * ```
 */

/** Whether `path` exists; errors other than "not found" (e.g. permissions) are thrown. */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}
