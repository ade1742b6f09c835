/**
 * Parity with the reference implementations: loads a fixture folder (config.json, weights.safetensors,
 * io.safetensors) as `../shared/reference/` lays it out, builds our graph for the config's kind, runs it,
 * and reports each output's relative error against what diffusers / OpenAI CLIP computed.
 * Used by the CI tests and by `deno task parity DIR`.
 */
import { GraphBuilder } from "../graph/builder.ts";
import { loadSafetensors, type SafetensorsFile } from "./safetensors.ts";
import { WeightSource } from "./weights.ts";
import { ModelContext } from "./layers.ts";
import { buildUNet2DCondition, parseUNetConfig } from "./unet_2d_condition.ts";
import { buildVaeDecoder, buildVaeEncoder, parseVaeConfig } from "./autoencoder_kl.ts";
import { buildClipTextModel, parseClipTextConfig } from "./clip_text_model.ts";
import { OrtSession } from "../ort/session.ts";
import { Tensor } from "../tensor.ts";
import { relativeError } from "../testing.ts";

export interface ParityRow {
  output: string;
  relError: number;
  tolerance: number;
}

export type FixtureKind = "unet" | "vae" | "clip_text";

export function fixtureKind(config: Record<string, unknown>): FixtureKind {
  if (Array.isArray(config.architectures) && (config.architectures as string[]).includes("CLIPTextModel")) {
    return "clip_text";
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
  if (kind === "unet") {
    const g = new GraphBuilder("unet");
    const src = WeightSource.fromFiles([weights]);
    buildUNet2DCondition(new ModelContext(g, src), parseUNetConfig(config));
    checkAllUsed(src, dir);
    const t = io.int("timestep");
    const out = await runGraph(g, {
      sample: f32(io, "sample"),
      timestep: Tensor.f32([t.length], t),
      encoder_hidden_states: f32(io, "encoder_hidden_states"),
    });
    compare("out_sample", out.out_sample, "out_sample");
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
  } else {
    const g = new GraphBuilder("clip_text");
    const src = WeightSource.fromFiles([weights], "text_model.");
    buildClipTextModel(new ModelContext(g, src), parseClipTextConfig(config));
    checkAllUsed(src, dir);
    const ids = io.int("input_ids");
    const e = io.entry("input_ids");
    const out = await runGraph(g, { input_ids: Tensor.i64(e.shape, ids) });
    compare("last_hidden_state", out.last_hidden_state, "last_hidden_state");
    compare("pooler_output", out.pooler_output, "pooler_output");
  }
  return rows;
}

/** Fails when the weights file holds tensors the graph never used (config and weights disagree). */
function checkAllUsed(src: WeightSource, dir: string) {
  const unused = src.unused();
  if (unused.length) {
    throw new RangeError(
      `${dir}/weights.safetensors: ${unused.length} tensors unused by the graph: ${
        unused.slice(0, 5).join(", ")
      }`,
    );
  }
}
