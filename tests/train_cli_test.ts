/**
 * End to end through the command line: `deno task train` fine-tunes a LoRA on the committed tiny model from a
 * folder of PNGs, prints where it wrote the adapter and the evaluation loss; a missing flag prints the usage,
 * and a bad value fails with the error.
 */
import { assert, assertEquals } from "../gpu-worker/testing.ts";
import { encodePng } from "../gpu-worker/image/png.ts";
import { renderScene } from "../gpu-worker/shapesworld/render.ts";
import { sampleScene } from "../gpu-worker/shapesworld/world.ts";
import { Rng } from "../gpu-worker/random.ts";
import { decodeLora, LORA_FILE_NAME } from "../gpu-worker/adapters/lora.ts";
import { EngineRunner } from "../gpu-worker/ort/runner.ts";
import { fineTune } from "../gpu-worker/training/finetune.ts";
import { runScript } from "./run_script.ts";

function train(args: string[]) {
  return runScript("scripts/train.ts", args);
}

async function withImages(fn: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "train_cli_test_" });
  try {
    await Deno.mkdir(`${dir}/images`);
    for (let i = 0; i < 3; i++) {
      const scene = sampleScene(new Rng(i), {
        objectCount: 1,
        shapes: ["star"],
        colours: ["purple"],
        textures: ["checkered"],
        backgrounds: ["white"],
      });
      await Deno.writeFile(`${dir}/images/star${i}.png`, encodePng(renderScene(scene)));
    }
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("deno task train writes a LoRA adapter and reports the evaluation loss", async () => {
  await withImages(async (dir) => {
    const out = `${dir}/sks`;
    const r = await train([
      ...["--model", "models/tiny-shapes", "--images", `${dir}/images`, "--prompt", "a sks star"],
      ...["--method", "lora", "--steps", "5", "--rank", "2", "--seed", "1", "--out", out],
    ]);
    assertEquals(r.code, 0, r.stderr);
    // stdout is a pipe here: no progress bar, only the result.
    assert(!r.stderr.includes("5/5"), `no progress when stdout is not a terminal: ${r.stderr}`);
    assert(r.stdout.includes(`wrote ${out}/${LORA_FILE_NAME}`), r.stdout);
    const m = r.stdout.match(/eval loss (\d+\.\d{4}) -> (\d+\.\d{4})/);
    assert(m, `eval loss line: ${r.stdout}`);
    const bytes = await Deno.readFile(`${out}/${LORA_FILE_NAME}`);
    const lora = decodeLora(bytes, LORA_FILE_NAME);
    assertEquals([lora.rank, lora.alpha, lora.info?.steps], [2, 2, 5]);
    // The same run in-process (fineTune with the flags' values) trains the same adapter, and the line reports
    // its evaluation losses (to the 4 decimals printed), before and after.
    const runner = new EngineRunner();
    try {
      const again = await fineTune(runner, {
        model: "models/tiny-shapes",
        images: `${dir}/images`,
        prompt: "a sks star",
        method: "lora",
        steps: 5,
        rank: 2,
        seed: 1,
        out: `${dir}/again/sks`,
      });
      const { before, after } = again.evalLoss;
      assert(before !== after, `training changed nothing: ${before}`);
      assertEquals(
        [Number(m[1]), Number(m[2])],
        [Number(before.toFixed(4)), Number(after.toFixed(4))],
        r.stdout,
      );
      assertEquals(await Deno.readFile(`${dir}/again/sks/${LORA_FILE_NAME}`), bytes, "the adapter written");
    } finally {
      runner.terminate();
    }
  });
});

Deno.test("deno task train prints the usage and exits 2 when a required flag is missing or unknown", async () => {
  const r = await train(["--model", "models/tiny-shapes", "--images", "x", "--prompt", "p", "--steps", "5"]);
  assertEquals(r.code, 2, r.stderr);
  assert(r.stderr.includes("usage: deno task train --model DIR --images DIR"), r.stderr);
  assertEquals(r.stdout, "");
  const typo = await train(["--model", "models/tiny-shapes", "--stepz", "5"]);
  assertEquals(typo.code, 2, typo.stderr);
  assert(typo.stderr.includes("Unknown option '--stepz'") && typo.stderr.includes("usage:"), typo.stderr);
});

Deno.test("deno task train exits 1 with the error for a bad --method or a non-numeric --steps", async () => {
  await withImages(async (dir) => {
    const common = [
      "--model",
      "models/tiny-shapes",
      "--images",
      `${dir}/images`,
      "--prompt",
      "p",
      "--out",
      `${dir}/o`,
    ];
    const method = await train([...common, "--method", "dora", "--steps", "5"]);
    assertEquals(method.code, 1, method.stderr);
    assert(method.stderr.includes(`error: method must be "lora" or "full", got "dora"`), method.stderr);
    const steps = await train([...common, "--method", "lora", "--steps", "five"]);
    assertEquals(steps.code, 1, steps.stderr);
    assert(steps.stderr.includes(`error: --steps expects a number, got "five"`), steps.stderr);
    assertEquals([...Deno.readDirSync(dir)].map((e) => e.name), ["images"], "nothing written");
  });
});

Deno.test("deno task train --method concept_slider: a visual slider from low/high folders; a bad config exits 2", async () => {
  await withImages(async (dir) => {
    for (const folder of ["low", "high"]) await Deno.mkdir(`${dir}/pairs/${folder}`, { recursive: true });
    for (let i = 0; i < 2; i++) {
      const img = renderScene(sampleScene(new Rng(10 + i), { objectCount: 1 }));
      const shade = (k: number) => encodePng({ ...img, rgb: img.rgb.map((v) => v * k) });
      await Deno.writeFile(`${dir}/pairs/low/s${i}.png`, shade(0.6));
      await Deno.writeFile(`${dir}/pairs/high/s${i}.png`, shade(1));
    }
    await Deno.writeTextFile(`${dir}/slider.json`, JSON.stringify({ rank: 2 }));
    const out = `${dir}/bright`;
    const r = await train([
      ...["--model", "models/tiny-shapes", "--method", "concept_slider", "--config", `${dir}/slider.json`],
      ...["--pairs", `${dir}/pairs`, "--steps", "3", "--out", out, "--json"],
    ]);
    assertEquals(r.code, 0, r.stderr);
    // --json: stdout is JSON lines only; progress to the last step (with its loss), then the result.
    const lines = r.stdout.trim().split("\n").map((l) => JSON.parse(l));
    const last = lines.filter((l) => l.type === "progress").at(-1);
    assertEquals([last.step, last.total, typeof last.loss, typeof last.eta_s], [3, 3, "number", "number"]);
    assertEquals(lines.at(-1).type, "result");
    assertEquals(lines.at(-1).outputs, [`${out}/${LORA_FILE_NAME}`]);
    const lora = decodeLora(await Deno.readFile(`${out}/${LORA_FILE_NAME}`), LORA_FILE_NAME);
    assertEquals([lora.rank, lora.info?.kind], [2, "visual"]);

    await Deno.writeTextFile(`${dir}/bad.json`, JSON.stringify({ positive: "a large circle", ranks: 2 }));
    const bad = await train([
      ...["--model", "models/tiny-shapes", "--method", "concept_slider", "--config", `${dir}/bad.json`],
      ...["--out", out],
    ]);
    assertEquals(bad.code, 2, bad.stderr);
    assert(bad.stderr.includes("ranks"), bad.stderr);
    await Deno.remove(`${dir}/pairs/high/s1.png`);
    const unpaired = await train([
      ...["--model", "models/tiny-shapes", "--method", "concept_slider", "--config", `${dir}/slider.json`],
      ...["--pairs", `${dir}/pairs`, "--steps", "3", "--out", out],
    ]);
    assertEquals(unpaired.code, 1, unpaired.stderr);
    assert(unpaired.stderr.includes("low/s1.png has no high/s1.*"), unpaired.stderr);
  });
});
