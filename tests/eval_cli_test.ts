/**
 * `deno task eval` through the command line: with `--json` its progress (one line per held-out prompt) and
 * its rates come as JSON lines on stdout; without it, on a pipe, only the text report.
 */
import { assert, assertEquals } from "../gpu-worker/testing.ts";
import { runScript } from "./run_script.ts";

Deno.test("deno task eval --json: a progress line per prompt, then the rates", async () => {
  const r = await runScript("scripts/eval.ts", ["--count", "2", "--steps", "2", "--json"]);
  assertEquals(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split("\n").map((l) => JSON.parse(l));
  assertEquals(lines.filter((l) => l.type === "progress").map((l) => [l.step, l.total]), [[1, 2], [2, 2]]);
  const result = lines.at(-1);
  assertEquals([result.type, result.kind, result.count], ["result", "prompt_following", 2]);
  for (const k of ["background", "colour", "shape"]) {
    assert(result.rates[k] >= 0 && result.rates[k] <= 1, `${k}: ${result.rates[k]}`);
  }
  const text = await runScript("scripts/eval.ts", ["--count", "2", "--steps", "2"]);
  assertEquals(text.code, 0, text.stderr);
  assert(text.stdout.startsWith("held-out prompts: 2"), text.stdout);
  assert(!text.stderr.includes("2/2"), "no bar on a pipe");
});
