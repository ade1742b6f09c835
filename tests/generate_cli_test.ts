/**
 * End to end through the command line a newcomer uses: `deno task generate` on the committed tiny model
 * writes a PNG, the same seed writes the same bytes, and a bad argument fails with a message.
 */
import { assert, assertEquals } from "../gpu-worker/testing.ts";
import { decodePng } from "../gpu-worker/image/png.ts";
import { runScript } from "./run_script.ts";

function generate(args: string[]) {
  return runScript("scripts/generate.ts", ["--model", "models/tiny-shapes", ...args]);
}

Deno.test("deno task generate writes a 64x64 PNG, deterministically by seed", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const common = [
      "--prompt",
      "a small blue star at the top, white background",
      "--steps",
      "8",
      "--seed",
      "3",
    ];
    const a = await generate([...common, "--out", `${dir}/a.png`]);
    assertEquals(a.code, 0, a.stderr);
    assert(a.stderr.includes("8/8"), "the progress bar reaches the last step");
    const b = await generate([...common, "--out", `${dir}/b.png`]);
    assertEquals(b.code, 0, b.stderr);
    const pa = await Deno.readFile(`${dir}/a.png`);
    assertEquals(pa, await Deno.readFile(`${dir}/b.png`));
    const img = decodePng(pa);
    assertEquals([img.width, img.height], [64, 64]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("deno task generate refuses a bad scheduler with the valid names", async () => {
  const r = await generate(["--prompt", "x", "--scheduler", "plms", "--out", "/dev/null"]);
  assertEquals(r.code, 1);
  assert(r.stderr.includes("Should be one of: ddim, ddpm, euler, euler_a, dpmpp_2m"), r.stderr);
});
