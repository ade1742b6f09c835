/**
 * A diffusers model folder (`model_index.json`, `text_encoder/`, `unet/`, `vae/`, `tokenizer/`,
 * `scheduler/scheduler_config.json`) read into configs, weights and a tokenizer, and turned into the four
 * graphs a Stable Diffusion pipeline runs: text encoder, UNet, VAE encoder, VAE decoder.
 *
 * @example
 * ```ts
 * const folder = await loadModelFolder("models/tiny-shapes");
 * const graphs = buildPipelineGraphs(folder);
 * ```
 */
import { GraphBuilder } from "../graph/builder.ts";
import { loadSafetensors, type SafetensorsFile } from "./safetensors.ts";
import { WeightSource } from "./weights.ts";
import { type LoraModule, type LoraSlots, ModelContext } from "./layers.ts";
import type { UNetConditioning } from "./conditioning.ts";
import { buildUNet2DCondition, parseUNetConfig, type UNetConfig } from "./unet_2d_condition.ts";
import { buildVaeDecoder, buildVaeEncoder, parseVaeConfig, type VaeConfig } from "./autoencoder_kl.ts";
import { buildClipTextModel, type ClipTextConfig, parseClipTextConfig } from "./clip_text_model.ts";
import { ClipTokenizer } from "../tokenizer/clip_tokenizer.ts";
import { pathExists } from "../fs.ts";

/** The attention projections that carry LoRA slots by default (diffusers' LoRA targets). */
export const DEFAULT_LORA_TARGETS = [/attn[12]\.(to_q|to_k|to_v|to_out\.0)$/];
/** Text-encoder LoRA slots: q/k/v/out_proj of every self-attention (diffusers' `--train_text_encoder` LoRA). */
export const TEXT_ENCODER_LORA_TARGETS = [/self_attn\.(q_proj|k_proj|v_proj|out_proj)$/];

export interface ModelFolder {
  dir: string;
  index: Record<string, unknown>;
  unetConfig: UNetConfig;
  vaeConfig: VaeConfig;
  textConfig: ClipTextConfig;
  schedulerConfig: Record<string, unknown>;
  tokenizer: ClipTokenizer;
  weights: { unet: SafetensorsFile; vae: SafetensorsFile; text_encoder: SafetensorsFile };
  /** Latent pixels per image pixel side (2^(VAE levels - 1)). */
  vaeScaleFactor: number;
}

async function readJson(path: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new Error(`model folder: cannot read ${path} (${(e as Error).message})`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new SyntaxError(`${path}: not valid JSON (${(e as Error).message})`);
  }
}

/** The first weights file that exists among diffusers' and transformers' names (fp32 before fp16). */
async function findWeights(dir: string, names: string[]): Promise<SafetensorsFile> {
  for (const n of names) if (await pathExists(`${dir}/${n}`)) return await loadSafetensors(`${dir}/${n}`);
  for (const n of ["diffusion_pytorch_model.bin", "pytorch_model.bin"]) {
    if (await pathExists(`${dir}/${n}`)) {
      throw new Error(`${dir}/${n}: pickle weights are refused for safety; convert them to safetensors`);
    }
  }
  throw new Error(`${dir}: no weights file (looked for ${names.join(", ")})`);
}

export async function loadModelFolder(dir: string): Promise<ModelFolder> {
  const index = await readJson(`${dir}/model_index.json`);
  const [unetRaw, vaeRaw, textRaw, schedRaw] = await Promise.all([
    readJson(`${dir}/unet/config.json`),
    readJson(`${dir}/vae/config.json`),
    readJson(`${dir}/text_encoder/config.json`),
    readJson(`${dir}/scheduler/scheduler_config.json`),
  ]);
  const diffusersNames = ["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"];
  const [unet, vae, text_encoder, tokenizer] = await Promise.all([
    findWeights(`${dir}/unet`, diffusersNames),
    findWeights(`${dir}/vae`, diffusersNames),
    findWeights(`${dir}/text_encoder`, ["model.safetensors", "model.fp16.safetensors"]),
    ClipTokenizer.fromModelFolder(dir),
  ]);
  const vaeConfig = parseVaeConfig(vaeRaw);
  return {
    dir,
    index,
    unetConfig: {
      ...parseUNetConfig(unetRaw),
      prediction_type: schedRaw.prediction_type as string | undefined,
    },
    vaeConfig,
    textConfig: parseClipTextConfig(textRaw),
    schedulerConfig: schedRaw,
    tokenizer,
    weights: { unet, vae, text_encoder },
    vaeScaleFactor: 2 ** (vaeConfig.block_out_channels.length - 1),
  };
}

export interface PipelineGraphs {
  textEncoder: GraphBuilder;
  unet: GraphBuilder;
  vaeEncoder: GraphBuilder;
  vaeDecoder: GraphBuilder;
  /** The UNet modules that carry LoRA slots. */
  loraModules: LoraModule[];
  /** The text-encoder modules that carry LoRA slots (paths without `text_model.`). */
  textLoraModules: LoraModule[];
}

/** The inference UNet graph with LoRA slots on `lora`'s targets and the given conditioning inputs. */
export function unetGraph(
  f: ModelFolder,
  opts: { lora?: LoraSlots; conditioning?: UNetConditioning } = {},
): { graph: GraphBuilder; loraModules: LoraModule[] } {
  const graph = new GraphBuilder("unet");
  const ctx = new ModelContext(graph, WeightSource.fromFiles([f.weights.unet]), {
    lora: opts.lora ?? { targets: DEFAULT_LORA_TARGETS },
    conditioning: opts.conditioning,
  });
  buildUNet2DCondition(ctx, f.unetConfig);
  return { graph, loraModules: ctx.loraModules };
}

/** Module paths of the UNet's cross-attentions (`...attn2`), in the weights' order. */
export function crossAttentionPaths(f: ModelFolder): string[] {
  return f.weights.unet.names().map((n) => n.match(/^(.*\.attn2)\.to_k\.weight$/)?.[1]).filter((p) =>
    p !== undefined
  );
}

/** Builds the four graphs from the folder's weights, with LoRA slots on the UNet and the text encoder. */
export function buildPipelineGraphs(
  f: ModelFolder,
  opts: { lora?: LoraSlots; textLora?: LoraSlots } = {},
): PipelineGraphs {
  const lora = opts.lora ?? { targets: DEFAULT_LORA_TARGETS };
  const textEncoder = new GraphBuilder("text_encoder");
  const textCtx = new ModelContext(textEncoder, textEncoderWeights(f), {
    lora: opts.textLora ?? { targets: TEXT_ENCODER_LORA_TARGETS },
  });
  buildClipTextModel(textCtx, f.textConfig, { extraTokens: true });
  const { graph: unet, loraModules } = unetGraph(f, { lora });
  const vaeEncoder = vaeEncoderGraph(f);
  const vaeDecoder = new GraphBuilder("vae_decoder");
  buildVaeDecoder(new ModelContext(vaeDecoder, WeightSource.fromFiles([f.weights.vae])), f.vaeConfig);
  return {
    textEncoder,
    unet,
    vaeEncoder,
    vaeDecoder,
    loraModules,
    textLoraModules: textCtx.loraModules,
  };
}

/** The VAE encoder graph alone (image -> latent_mean, latent_logvar), e.g. to cache training latents. */
export function vaeEncoderGraph(f: ModelFolder): GraphBuilder {
  const g = new GraphBuilder("vae_encoder");
  buildVaeEncoder(new ModelContext(g, WeightSource.fromFiles([f.weights.vae])), f.vaeConfig);
  return g;
}

/** transformers stores the text tower under `text_model.`; some exports drop it. */
export function textEncoderPrefix(f: ModelFolder): string {
  return f.weights.text_encoder.has("text_model.embeddings.token_embedding.weight") ? "text_model." : "";
}

/** The text encoder's weights as a source for graph building. */
export function textEncoderWeights(f: ModelFolder): WeightSource {
  return WeightSource.fromFiles([f.weights.text_encoder], textEncoderPrefix(f));
}

/** The inference text encoder graph (input_ids + added-token rows -> last_hidden_state, pooler_output). */
export function textEncoderGraph(f: ModelFolder): GraphBuilder {
  const g = new GraphBuilder("text_encoder");
  buildClipTextModel(new ModelContext(g, textEncoderWeights(f)), f.textConfig, { extraTokens: true });
  return g;
}
