/**
 * The edge process never loads the native ONNX Runtime addon: onnxruntime-node (and `gpu-worker/ort/`, the
 * only code that imports it) is outside the import graph of the app and of the embedded default; only the
 * entry point that starts the in-process worker (`main.ts` -> `gpu-worker/worker.ts`, whose engine runs ORT
 * in a Worker thread) reaches it.
 */
import { assert, assertEquals } from "../gpu-worker/testing.ts";

interface ModuleGraph {
  roots: string[];
  modules: { specifier: string; npmPackage?: string; dependencies?: { code?: { specifier: string } }[] }[];
  redirects: Record<string, string>;
}

async function importGraph(entry: string): Promise<ModuleGraph> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", new URL(entry, import.meta.url).pathname],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

/** The modules of the graph that are ONNX Runtime or our wrapper of it. */
function ortModules(g: ModuleGraph): string[] {
  return g.modules.map((m) => m.npmPackage ?? m.specifier).filter((s) =>
    /(^|\/)onnxruntime-(node|common)@/.test(s) || s.includes("/gpu-worker/ort/session.ts") ||
    s.includes("/gpu-worker/ort/runner")
  );
}

Deno.test("import graph: edge/app.ts and edge/embedded.ts do not reach onnxruntime-node", async () => {
  for (const entry of ["./app.ts", "./embedded.ts"]) {
    const g = await importGraph(entry);
    assert(g.modules.length > 20, `${entry}: a real graph (${g.modules.length} modules)`);
    assertEquals(ortModules(g), [], `${entry} imports ONNX Runtime`);
  }
});

Deno.test("import graph: the check would see it (main.ts starts the worker, which does import it)", async () => {
  const g = await importGraph("./main.ts");
  assert(ortModules(g).some((s) => s.startsWith("onnxruntime-node@")), ortModules(g).join(", "));
});
