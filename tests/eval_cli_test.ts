/**
 * `deno task eval` through the command line: with `--json` its progress (one line per held-out prompt) and
 * its rates come as JSON lines on stdout; without it, on a pipe, only the text report. Bad flags of it and of
 * `scripts/eval_reference.ts` exit 2 with the reason.
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

Deno.test("the eval scripts exit 2 with the reason for a bad flag, before loading any model", async () => {
  for (
    const [script, args, message] of [
      ["scripts/eval.ts", ["--count", "0"], '--count expects a positive integer, got "0"'],
      [
        "scripts/eval.ts",
        ["--guidance-rescale", "2"],
        '--guidance-rescale expects a number in 0..1, got "2"',
      ],
      ["scripts/eval_reference.ts", ["--steps", "x"], '--steps expects a positive integer, got "x"'],
      [
        "scripts/eval_reference.ts",
        ["--modes", "reference,ref"],
        '--modes expects a comma-separated list of reference, zeros, text, got "reference,ref"',
      ],
      ["scripts/eval_reference.ts", ["--sed", "1"], "Unknown option '--sed'"],
    ] as const
  ) {
    const r = await runScript(script, [...args]);
    assertEquals(r.code, 2, `${script} ${args.join(" ")}: ${r.stderr}`);
    assert(r.stderr.includes(message), `${script} ${args.join(" ")}: ${r.stderr}`);
  }
});
