/**
 * Parity with the official SeeCoder (SHI-Labs/Prompt-Free-Diffusion's seecoder.py and swin.py on torch):
 * a tiny configuration, seeded random weights saved under the checkpoints' `ctx.image.` names, a batch of two
 * odd-sized images (50 x 42: every padding path of the Swin runs) and one more of another size (29 x 61).
 * Made by scripts/reference/make_seecoder_fixtures.py; compared: the plain and PA variants, per image and with
 * the official batched decoder attention, and one graph with symbolic sizes serving both image sizes. Also: the
 * project's autodiff against PyTorch autograd, for tensors of the trainable parts (decoder, query transformer).
 */
import { assert, assertEquals, relativeError } from "../testing.ts";
import { runModelParity } from "./parity.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { ModelContext } from "./layers.ts";
import { WeightSource } from "./weights.ts";
import { loadSafetensors } from "./safetensors.ts";
import { buildSeeCoder, parseSeeCoderConfig } from "./seecoder.ts";
import { OrtSession } from "../ort/session.ts";
import { Tensor } from "../tensor.ts";
import { appendBackward } from "../graph/autodiff.ts";

const DIR = new URL("./fixtures/seecoder-tiny", import.meta.url).pathname;

Deno.test("SeeCoder parity with the official modules (tiny, plain and PA)", async () => {
  const rows = await runModelParity(DIR);
  assertEquals(rows.map((r) => r.output).sort(), [
    "embeddings",
    "embeddings_batched",
    "embeddings_pa",
    "embeddings_pa_batched",
  ]);
  for (const r of rows) {
    assert(
      r.relError < r.tolerance,
      `${r.output}: relative error ${r.relError.toExponential(3)} >= ${r.tolerance}`,
    );
  }
});

Deno.test("SeeCoder: one graph serves any image size and batch (tiny PA)", async () => {
  const config = JSON.parse(await Deno.readTextFile(`${DIR}/config.json`));
  const io = await loadSafetensors(`${DIR}/io.safetensors`);
  const g = new GraphBuilder("seecoder");
  const src = WeightSource.fromFiles([await loadSafetensors(`${DIR}/weights.safetensors`)]);
  const cfg = parseSeeCoderConfig({
    ...config,
    qtransformer: { ...config.qtransformer, with_fea2d_pos: true },
  });
  buildSeeCoder(new ModelContext(g, src), cfg, {});
  const s = await OrtSession.create(g.toBytes(), { inputs: g.inputs });
  try {
    for (const [input, ref] of [["image", "embeddings_pa"], ["image2", "image2_embeddings_pa"]]) {
      const x = Tensor.f32(io.entry(input).shape, io.float32(input));
      const { embeddings } = await s.run({ image: x });
      assertEquals(embeddings.dims, io.entry(ref).shape);
      const err = relativeError(embeddings.data as Float32Array, io.float32(ref));
      assert(err < 1e-4, `${input}: relative error ${err.toExponential(3)}`);
    }
  } finally {
    await s.release();
  }
});

Deno.test("SeeCoder: gradients match PyTorch autograd (tiny PA, static size; decoder, query transformer)", async () => {
  const config = JSON.parse(await Deno.readTextFile(`${DIR}/config.json`));
  const io = await loadSafetensors(`${DIR}/io.safetensors`);
  const weights = await loadSafetensors(`${DIR}/weights.safetensors`);
  const cfg = parseSeeCoderConfig({
    ...config,
    qtransformer: { ...config.qtransformer, with_fea2d_pos: true },
  });
  const P = "image2_grad.";
  const params = io.names().filter((n) => n.startsWith(P + "ctx.")).map((n) => n.slice(P.length));
  assertEquals(params.length, 12);
  const g = new GraphBuilder("seecoder");
  const ctx = new ModelContext(g, WeightSource.fromFiles([weights]), {
    trainable: (n) => params.includes(n),
  });
  const dims = io.entry("image2").shape;
  const out = buildSeeCoder(ctx, cfg, { batch: dims[0], height: dims[2], width: dims[3] });
  const gradOutput = g.input("grad_output", "float32", io.entry(`image2_grad_output`).shape);
  const loss = g.op("ReduceSum", [g.op("Mul", [out, gradOutput])], { keepdims: 0 });
  const wrt = params; // the Swin is frozen (and the autodiff has no rule for its Pad)
  appendBackward(g, loss, wrt.map((n) => g.valueOf(n))).forEach((v, i) => g.output(v, `grad.${wrt[i]}`));
  const feeds: Record<string, Tensor> = {
    image: Tensor.f32(dims, io.float32("image2")),
    grad_output: Tensor.f32(io.entry("image2_grad_output").shape, io.float32("image2_grad_output")),
  };
  for (const [n, v] of ctx.trainables) feeds[n] = Tensor.f32(v.shape, v.data);
  const s = await OrtSession.create(g.toBytes(), { inputs: g.inputs });
  try {
    const res = await s.run(feeds);
    for (const n of wrt) {
      const err = relativeError(res[`grad.${n}`].data as Float32Array, io.float32(P + n));
      assert(err < 1e-3, `grad.${n}: relative error ${err.toExponential(3)}`);
    }
  } finally {
    await s.release();
  }
});
