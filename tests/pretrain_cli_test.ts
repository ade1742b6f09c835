/**
 * `deno task pretrain` end to end at toy size: every phase runs from a fresh architecture and writes a model
 * folder, and the decoder phase (with `--object-weight`) rewrites its VAE; `--attribute-drop` re-captions the stored latents' scenes and refuses latents made with another seed;
 * bad flag values exit 2 with the reason. (Quality is measured by tests/prompt_following_test.ts on the
 * committed weights, not here.)
 */
import { assert, assertEquals } from "../gpu-worker/testing.ts";
import { runScript } from "./run_script.ts";

const pretrain = (args: string[]) => runScript("scripts/pretrain.ts", args);
const TOY = ["--vae-steps", "2", "--vae-batch", "2", "--unet-steps", "2", "--batch", "2", "--dataset", "6"];

Deno.test("deno task pretrain: all phases at toy size; --attribute-drop checks the latents' seed", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pretrain_cli_test_" });
  try {
    const r = await pretrain(["--out", dir, ...TOY, "--attribute-drop", "0.5", "--object-weight", "4"]);
    assertEquals(r.code, 0, r.stderr);
    for (const l of ["vae done", "latents: 6 items", "unet step 2/2", "unet done"]) {
      assert(r.stdout.includes(l), `"${l}" in:\n${r.stdout}`);
    }
    for (
      const f of [
        "model_index.json",
        "vae/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
        "tokenizer/vocab.json",
        ".pretrain/latents.safetensors",
      ]
    ) assert((await Deno.stat(`${dir}/${f}`)).size > 0, f);
    const sf = JSON.parse(await Deno.readTextFile(`${dir}/vae/config.json`)).scaling_factor;
    assert(Number.isFinite(sf) && sf > 0, `scaling_factor ${sf}`);

    // The decoder alone, its loss weighted towards the objects' pixels: the VAE's weights change.
    const vaeFile = `${dir}/vae/diffusion_pytorch_model.safetensors`;
    const before = await Deno.readFile(vaeFile);
    const dec = await pretrain([
      "--out",
      dir,
      ...TOY,
      "--phase",
      "decoder",
      "--decoder-steps",
      "2",
      "--object-weight",
      "4",
    ]);
    assertEquals(dec.code, 0, dec.stderr);
    assert(dec.stdout.includes("decoder step 2/2") && dec.stdout.includes("decoder done"), dec.stdout);
    const after = await Deno.readFile(vaeFile);
    assertEquals(after.length, before.length);
    assert(after.some((b, i) => b !== before[i]), "the decoder phase rewrote the VAE's weights");

    // --json: stdout holds JSON lines only, the phase's progress and its log lines (a new decoder run).
    await Deno.remove(`${dir}/.pretrain/decoder`, { recursive: true });
    const json = await pretrain([
      "--out",
      dir,
      ...TOY,
      "--phase",
      "decoder",
      "--decoder-steps",
      "2",
      "--json",
    ]);
    assertEquals(json.code, 0, json.stderr);
    const lines = json.stdout.trim().split("\n").map((l) => JSON.parse(l));
    const steps = lines.filter((l) => l.type === "progress").map((l) => [l.label, l.step, l.total]);
    assertEquals(steps, [["decoder", 1, 2], ["decoder", 2, 2]]);
    assert(lines.some((l) => l.type === "log" && /decoder done/.test(l.message)), json.stdout);

    // SeeCoder: the text pretext, then the diffusion loss from its weights; the official layout is written.
    const sc = await pretrain([
      "--out",
      dir,
      ...TOY,
      "--phase",
      "seecoder",
      "--seecoder-pretext-steps",
      "2",
      "--seecoder-steps",
      "2",
      "--seecoder-batch",
      "2",
    ]);
    assertEquals(sc.code, 0, sc.stderr);
    for (
      const l of [
        "seecoder-text step 2/2",
        "seecoder text pretext done",
        "seecoder step 2/2",
        "seecoder done",
      ]
    ) {
      assert(sc.stdout.includes(l), `"${l}" in:\n${sc.stdout}`);
    }
    assert((await Deno.stat(`${dir}/seecoder/seecoder.safetensors`)).size > 0);

    // The latents were encoded with seed 0: re-captioning them as seed 1's scenes would train on wrong captions.
    const wrong = await pretrain([
      "--out",
      dir,
      ...TOY,
      "--phase",
      "unet",
      "--seed",
      "1",
      "--attribute-drop",
      "0.5",
    ]);
    assert(wrong.code !== 0, wrong.stdout);
    assert(wrong.stderr.includes("does not describe scene"), wrong.stderr);
    assert(wrong.stderr.includes("the same --seed"), wrong.stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("deno task pretrain refuses bad flag values with the reason, exit 2", async () => {
  for (
    const [args, says] of [
      [["--attribute-drop", "2"], "--attribute-drop expects a number in 0..1"],
      [["--vae-lr", "0"], "--vae-lr"],
      [["--phase", "text"], "--phase must be one of"],
      [["--object-weight=-1"], "--object-weight"],
      [["--object-weight", "-1"], "argument is ambiguous"],
      [["--unknown-flag", "1"], "--unknown-flag"],
    ] as const
  ) {
    const r = await pretrain(["--out", "/nonexistent", ...args]);
    assertEquals(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert(r.stderr.includes(says), `${args.join(" ")}: ${r.stderr}`);
  }
});
