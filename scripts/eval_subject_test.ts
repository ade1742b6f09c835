/**
 * `deno task eval:subject` end to end on the tiny model: a small random DreamBooth LoRA (nothing trained), a few
 * rendered subject images and the tiny random encoders of `testing_encoders.ts` in a model folder's `eval/`
 * give numeric DINO / CLIP-I / CLIP-T beside the paper's rows (and the ShapesWorld line); a model without
 * encoders says which files are missing and still exits 0; a missing images folder is a usage error (exit 2).
 */
import { assert, assertEquals } from "../gpu-worker/testing.ts";
import { runScript } from "../tests/run_script.ts";
import { evalFolder, TINY_MODEL } from "../gpu-worker/eval/testing_encoders.ts";
import { encodeLora, type LoraAdapter } from "../gpu-worker/adapters/lora.ts";
import { encodePng } from "../gpu-worker/image/png.ts";
import { renderScene } from "../gpu-worker/shapesworld/render.ts";
import { sampleScene } from "../gpu-worker/shapesworld/world.ts";
import { Rng } from "../gpu-worker/random.ts";

/** A 32 -> 32 attention projection of the tiny UNet. */
const MODULE = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q";
const FAST = ["--prompts", "2", "--per-prompt", "1", "--steps", "2", "--seed", "3"];

/** A temp folder with `photos/` (3 renders of one star), `rex.safetensors` (a random LoRA) and `model/`. */
async function fixture(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "eval_subject_test_" });
  await Deno.mkdir(`${dir}/photos`);
  for (let i = 0; i < 3; i++) {
    const scene = sampleScene(new Rng(40 + i), {
      objectCount: 1,
      shapes: ["star"],
      colours: ["purple"],
      textures: ["checkered"],
      backgrounds: ["white"],
    });
    await Deno.writeFile(`${dir}/photos/star-${i}.png`, encodePng(renderScene(scene, 64)));
  }
  const rng = new Rng(7), rank = 2;
  const modules: LoraAdapter["modules"] = new Map([[MODULE, {
    down: rng.normal(rank * 32, 0.1),
    up: rng.normal(32 * rank, 0.1),
    inFeatures: 32,
    outFeatures: 32,
  }]]);
  const lora = { name: "rex", rank, alpha: rank, modules };
  await Deno.writeFile(`${dir}/rex.safetensors`, encodeLora(lora, { token: "sks", class_word: "star" }));
  // The tiny model's parts linked, plus eval/ with the random encoders.
  await Deno.mkdir(`${dir}/model`);
  for await (const e of Deno.readDir(TINY_MODEL)) {
    if (!e.name.startsWith(".")) await Deno.symlink(`${TINY_MODEL}/${e.name}`, `${dir}/model/${e.name}`);
  }
  await evalFolder(`${dir}/model`);
  return dir;
}

/** The table row's cells after its name, e.g. ["0.668", "0.803", "0.305"]. */
function cells(out: string, name: string): string[] {
  const line = out.split("\n").find((l) => l.startsWith(`| ${name} |`));
  assert(line, `no row "${name}" in:\n${out}`);
  return line.split("|").slice(2, -1).map((c) => c.trim());
}

Deno.test("eval:subject with encoders: numeric DINO / CLIP-I / CLIP-T for ours beside the paper's rows", async () => {
  const dir = await fixture();
  try {
    const r = await runScript("scripts/eval_subject.ts", [
      ...["--model", `${dir}/model`, "--adapter", `${dir}/rex.safetensors`, "--images", `${dir}/photos`],
      ...FAST,
      ...["--shapesworld", "--json", `${dir}/eval.json`],
    ]);
    assertEquals(r.code, 0, r.stderr);
    const ours = cells(r.stdout, "ours");
    assert(ours.every((c) => /^-?[01]\.\d{3}$/.test(c)), `numeric cells: ${ours}`);
    assertEquals(cells(r.stdout, "DreamBooth (Stable Diffusion) (paper)"), ["0.668", "0.803", "0.305"]);
    assertEquals(cells(r.stdout, "Real images (paper)"), ["0.774", "0.885", "-"]);
    assert(r.stdout.includes("2 prompts x 1 images"), r.stdout);
    assert(r.stdout.includes("ShapesWorld analytic fidelity"), r.stdout);
    assert(!r.stderr.includes("lacks"), r.stderr);

    const report = JSON.parse(await Deno.readTextFile(`${dir}/eval.json`));
    assertEquals(report.prompts, ["a sks star in the jungle", "a sks star in the snow"]);
    assertEquals(report.steps, 2);
    assertEquals(ours, [report.ours.dino, report.ours.clip_i, report.ours.clip_t].map((v) => v.toFixed(3)));
    assert(
      report.shapesworld.score >= 0 && report.shapesworld.score <= 1,
      JSON.stringify(report.shapesworld),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("eval:subject without encoders names the missing files, prints '-' cells, exits 0", async () => {
  const dir = await fixture();
  try {
    const r = await runScript("scripts/eval_subject.ts", [
      ...[
        "--model",
        "models/tiny-shapes",
        "--adapter",
        `${dir}/rex.safetensors`,
        "--images",
        `${dir}/photos`,
      ],
      ...FAST,
    ]);
    assertEquals(r.code, 0, r.stderr);
    for (const f of ["dino.onnx", "clip_image.onnx", "clip_text.onnx"]) {
      assert(r.stderr.includes(f), `names ${f}: ${r.stderr}`);
    }
    assert(r.stderr.includes("models/tiny-shapes/eval/"), r.stderr);
    assertEquals(cells(r.stdout, "ours"), ["-", "-", "-"]);
    assertEquals(cells(r.stdout, "DreamBooth (Stable Diffusion) (paper)"), ["0.668", "0.803", "0.305"]);
    // models/tiny-shapes is a ShapesWorld model: the analytic fidelity is measured instead.
    assert(/ShapesWorld analytic fidelity.*ours [01]\.\d{3}/.test(r.stdout), r.stdout);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("eval:subject refuses a missing --images folder and malformed flags with exit code 2", async () => {
  const dir = await fixture();
  try {
    const r = await runScript("scripts/eval_subject.ts", [
      ...["--adapter", `${dir}/rex.safetensors`, "--images", `${dir}/no-such-folder`],
    ]);
    assertEquals(r.code, 2, r.stderr);
    assert(r.stderr.includes(`--images: expected a folder of the subject's real images`), r.stderr);
    assert(r.stderr.includes(`got "${dir}/no-such-folder" (not found)`), r.stderr);

    const bad = await runScript("scripts/eval_subject.ts", [
      ...["--adapter", `${dir}/rex.safetensors`, "--images", `${dir}/photos`, "--per-prompt", "zero"],
    ]);
    assertEquals(bad.code, 2, bad.stderr);
    assert(bad.stderr.includes(`--per-prompt expects an integer in 1..16, got "zero"`), bad.stderr);

    const neither = await runScript("scripts/eval_subject.ts", ["--images", `${dir}/photos`]);
    assertEquals(neither.code, 2, neither.stderr);
    assert(neither.stderr.includes("expected --adapter FILE"), neither.stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
