/**
 * Parity with the reference implementations: loads a fixture folder (config.json, weights.safetensors,
 * io.safetensors) as `../shared/reference/` lays it out, builds our graph for the config's kind, runs it,
 * and reports each output's relative error against what diffusers / OpenAI CLIP computed (or, for a SeeCoder
 * fixture, the official Prompt-Free Diffusion modules).
 * When the fixture holds `grad.<name>` entries (PyTorch autograd of `sum(output * grad_output)`), the same
 * graph gets our backward pass appended and every gradient is compared too (tolerance 1e-3).
 * Used by the CI tests and by `deno task parity DIR`.
 */
import { GraphBuilder } from "../graph/builder.ts";
import { loadSafetensors, type SafetensorsFile } from "./safetensors.ts";
import { WeightSource } from "./weights.ts";
import { ModelContext } from "./layers.ts";
import { buildUNet2DCondition, parseUNetConfig } from "./unet_2d_condition.ts";
import { buildVaeDecoder, buildVaeEncoder, parseVaeConfig } from "./autoencoder_kl.ts";
import { buildClipTextModel, parseClipTextConfig } from "./clip_text_model.ts";
import { buildSeeCoder, isSeeCoderBuffer, parseSeeCoderConfig } from "./seecoder.ts";
import { OrtSession } from "../ort/session.ts";
import { Tensor } from "../tensor.ts";
import { relativeError } from "../testing.ts";
import { appendBackward } from "../graph/autodiff.ts";
import type { Value } from "../graph/builder.ts";

export interface ParityRow {
  output: string;
  relError: number;
  tolerance: number;
}

export type FixtureKind = "unet" | "vae" | "clip_text" | "seecoder";

export function fixtureKind(config: Record<string, unknown>): FixtureKind {
  if (Array.isArray(config.architectures) && (config.architectures as string[]).includes("CLIPTextModel")) {
    return "clip_text";
  }
  if (Array.isArray(config.architectures) && (config.architectures as string[]).includes("SeeCoder")) {
    return "seecoder";
  }
  if ("latent_channels" in config) return "vae";
  if ("down_block_types" in config && "cross_attention_dim" in config) return "unet";
  throw new RangeError(
    "cannot tell the model kind from config.json (expected a UNet, AutoencoderKL or CLIPTextModel config)",
  );
}

function f32(io: SafetensorsFile, name: string): Tensor {
  const e = io.entry(name);
  return Tensor.f32(e.shape, io.float32(name));
}

async function runGraph(g: GraphBuilder, feeds: Record<string, Tensor>) {
  const s = await OrtSession.create(g.toBytes(), { inputs: g.inputs });
  try {
    return await s.run(feeds);
  } finally {
    await s.release();
  }
}

/** Runs one model fixture folder; returns a row per compared output. */
export async function runModelParity(dir: string): Promise<ParityRow[]> {
  const config = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
  const weights = await loadSafetensors(`${dir}/weights.safetensors`);
  const io = await loadSafetensors(`${dir}/io.safetensors`);
  const kind = fixtureKind(config);
  const rows: ParityRow[] = [];
  const compare = (output: string, got: Tensor, refName: string, tolerance = 1e-4) =>
    rows.push({ output, relError: relativeError(got.f, io.float32(refName)), tolerance });
  const gradNames = io.names().filter((n) => n.startsWith("grad.")).map((n) => n.slice(5));
  if (kind === "unet") {
    const g = new GraphBuilder("unet");
    const src = WeightSource.fromFiles([weights]);
    const wanted = new Set(gradNames);
    const ctx = new ModelContext(g, src, { trainable: (name) => wanted.has(name) });
    const sampleDims = io.entry("sample").shape, ehsDims = io.entry("encoder_hidden_states").shape;
    const out = buildUNet2DCondition(ctx, parseUNetConfig(config), {
      batch: sampleDims[0],
      height: sampleDims[2],
      width: sampleDims[3],
      sequence: ehsDims[1],
    });
    checkAllUsed(src, dir);
    const t = io.int("timestep");
    const feeds: Record<string, Tensor> = {
      sample: f32(io, "sample"),
      timestep: Tensor.f32([t.length], t),
      encoder_hidden_states: f32(io, "encoder_hidden_states"),
    };
    for (const [name, v] of ctx.trainables) feeds[name] = Tensor.f32(v.shape, v.data);
    const results = await runWithGradients(g, out, gradNames, feeds, io);
    compare("out_sample", results.out_sample, "out_sample");
    for (const n of gradNames) compare(`grad.${n}`, results[`grad.${n}`], `grad.${n}`, 1e-3);
  } else if (kind === "vae") {
    const cfg = parseVaeConfig(config);
    const ge = new GraphBuilder("vae_encoder");
    const src = WeightSource.fromFiles([weights]);
    buildVaeEncoder(new ModelContext(ge, src), cfg);
    const enc = await runGraph(ge, { image: f32(io, "image") });
    compare("latent_mean", enc.latent_mean, "latent_mean");
    compare("latent_logvar", enc.latent_logvar, "latent_logvar");
    const gd = new GraphBuilder("vae_decoder");
    buildVaeDecoder(new ModelContext(gd, src), cfg);
    checkAllUsed(src, dir);
    const dec = await runGraph(gd, { latents: f32(io, "latents") });
    compare("decoded", dec.decoded, "decoded");
  } else if (kind === "seecoder") {
    // Every `embeddings<variant>[_batched]` in io: the plain and PA variants (PA when the name says so; the plain
    // graph leaves the file's pe_layer unread), per image (default) or the official batched decoder attention.
    const image = f32(io, "image"), dims = io.entry("image").shape;
    for (const name of io.names().filter((n) => n.startsWith("embeddings"))) {
      const pa = name.includes("_pa");
      const cfg = parseSeeCoderConfig({
        ...config,
        qtransformer: { ...config.qtransformer, with_fea2d_pos: pa },
      });
      const g = new GraphBuilder("seecoder");
      const src = WeightSource.fromFiles([weights]);
      buildSeeCoder(new ModelContext(g, src), cfg, {
        batch: dims[0],
        height: dims[2],
        width: dims[3],
        decoderAttention: name.endsWith("_batched") ? "across_batch" : "per_image",
      });
      checkAllUsed(src, dir, (n) => isSeeCoderBuffer(n) || (!pa && n.includes(".pe_layer.")));
      compare(name, (await runGraph(g, { image })).embeddings, name);
    }
  } else {
    const g = new GraphBuilder("clip_text");
    const src = WeightSource.fromFiles([weights], "text_model.");
    const wanted = new Set(gradNames.map((n) => n.replace(/^text_model\./, "")));
    const ctx = new ModelContext(g, src, { trainable: (name) => wanted.has(name) });
    const e = io.entry("input_ids");
    const last = buildClipTextModel(ctx, parseClipTextConfig(config), {
      batch: e.shape[0],
      sequence: e.shape[1],
    });
    checkAllUsed(src, dir);
    const feeds: Record<string, Tensor> = { input_ids: Tensor.i64(e.shape, io.int("input_ids")) };
    for (const [name, v] of ctx.trainables) feeds[`text_model.${name}`] = Tensor.f32(v.shape, v.data);
    const out = await runWithGradients(g, last, gradNames, feeds, io, "text_model.");
    compare("last_hidden_state", out.last_hidden_state, "last_hidden_state");
    compare("pooler_output", out.pooler_output, "pooler_output");
    for (const n of gradNames) compare(`grad.${n}`, out[`grad.${n}`], `grad.${n}`, 1e-3);
  }
  return rows;
}

/**
 * Appends sum(output * grad_output) and its gradients with respect to `gradNames` (graph inputs, named as in
 * the fixture; `prefix` is stripped to find the graph's own name), then runs forward and backward at once.
 */
async function runWithGradients(
  g: GraphBuilder,
  output: Value,
  gradNames: string[],
  feeds: Record<string, Tensor>,
  io: SafetensorsFile,
  prefix = "",
): Promise<Record<string, Tensor>> {
  if (!gradNames.length) return await runGraph(g, feeds);
  const gradOutput = g.input("grad_output", "float32", io.entry("grad_output").shape);
  const loss = g.op("ReduceSum", [g.op("Mul", [output, gradOutput])], { keepdims: 0 });
  const wrt = gradNames.map((n) => g.valueOf(n.startsWith(prefix) ? n.slice(prefix.length) : n));
  appendBackward(g, loss, wrt).forEach((grad, i) => g.output(grad, `grad.${gradNames[i]}`));
  // Trainable inputs were declared under their graph names; feed them under those names.
  const renamed: Record<string, Tensor> = {};
  for (const [k, v] of Object.entries(feeds)) {
    renamed[k.startsWith(prefix) && prefix ? k.slice(prefix.length) : k] = v;
  }
  return await runGraph(g, { ...renamed, grad_output: f32(io, "grad_output") });
}

/** Fails when the weights file holds tensors the graph never used (config and weights disagree). */
function checkAllUsed(src: WeightSource, dir: string, ignore: (name: string) => boolean = () => false) {
  const unused = src.unused().filter((n) => !ignore(n));
  if (unused.length) {
    throw new RangeError(
      `${dir}/weights.safetensors: ${unused.length} tensors unused by the graph: ${
        unused.slice(0, 5).join(", ")
      }`,
    );
  }
}
