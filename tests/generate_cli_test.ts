/**
 * End to end through the command line a newcomer uses: `deno task generate` on the committed tiny model
 * writes a PNG, the same seed writes the same bytes, and a bad argument fails with a message.
 */
import { assert, assertEquals } from "../gpu-worker/testing.ts";
import { decodePng } from "../gpu-worker/image/png.ts";
import { runScript } from "./run_script.ts";
import { encodeLora, type LoraAdapter } from "../gpu-worker/adapters/lora.ts";
import { Rng } from "../gpu-worker/random.ts";

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
    const a = await generate([...common, "--out", `${dir}/a.png`, "--json"]);
    assertEquals(a.code, 0, a.stderr);
    const lines = a.stdout.trim().split("\n").map((l) => JSON.parse(l));
    const last = lines.filter((l) => l.type === "progress").at(-1);
    assertEquals([last.step, last.total], [8, 8], "progress reaches the last step");
    assertEquals([lines.at(-1).type, lines.at(-1).outputs, lines.at(-1).seed], [
      "result",
      [`${dir}/a.png`],
      3,
    ]);
    const b = await generate([...common, "--out", `${dir}/b.png`]);
    assertEquals(b.code, 0, b.stderr);
    assert(!b.stderr.includes("8/8"), "no progress bar when stdout is not a terminal");
    assert(b.stdout.startsWith(`wrote ${dir}/b.png`), b.stdout);
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

Deno.test("deno task generate --grid renders a row of slider scales per seed (--n rows) in one PNG", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // A slider file: random rank-2 factors on one self-attention projection of the tiny UNet.
    const rng = new Rng(3);
    const path = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q";
    const modules: LoraAdapter["modules"] = new Map([[path, {
      down: rng.normal(2 * 32, 0.5),
      up: rng.normal(32 * 2, 0.5),
      inFeatures: 32,
      outFeatures: 32,
    }]]);
    await Deno.writeFile(`${dir}/s.safetensors`, encodeLora({ name: "s", rank: 2, alpha: 2, modules }));
    const r = await generate([
      "--prompt",
      "a red circle, white background",
      "--steps",
      "4",
      "--slider",
      `${dir}/s.safetensors`,
      "--grid=-2,0,2",
      "--n",
      "2",
      "--out",
      `${dir}/grid.png`,
    ]);
    assertEquals(r.code, 0, r.stderr);
    assert(r.stdout.includes("seeds 0..1 top to bottom"), r.stdout);
    const grid = decodePng(await Deno.readFile(`${dir}/grid.png`));
    assertEquals([grid.width, grid.height], [3 * 64, 2 * 64]);
    // Cell (row, column) as bytes: the scales differ along a row, the seeds down a column.
    const cell = (row: number, col: number) => {
      const out: number[] = [];
      for (let y = row * 64; y < (row + 1) * 64; y++) {
        out.push(...grid.rgb.subarray((y * 192 + col * 64) * 3, (y * 192 + (col + 1) * 64) * 3));
      }
      return out.join(",");
    };
    assert(cell(0, 0) !== cell(0, 2), "scales -2 and 2 differ");
    assert(cell(0, 1) !== cell(1, 1), "seeds 0 and 1 differ");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
