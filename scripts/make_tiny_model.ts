/**
 * Writes the tiny ShapesWorld base model (`models/tiny-shapes/`, diffusers layout) with seeded random
 * weights: the SD architecture in miniature for 64x64 images (CLIP-style text encoder over the ShapesWorld
 * vocabulary, a 3-level UNet with cross-attention on a 16x16x4 latent, a 3-level KL autoencoder).
 * The training-engine work pretrains these weights in place; this script fixes the architecture.
 *
 * Usage: deno task make-tiny [--out models/tiny-shapes] [--seed 0]
 */
import { GraphBuilder } from "../gpu-worker/graph/builder.ts";
import { ModelContext } from "../gpu-worker/models/layers.ts";
import { WeightSource } from "../gpu-worker/models/weights.ts";
import { writeSafetensors } from "../gpu-worker/models/safetensors.ts";
import { buildUNet2DCondition, parseUNetConfig } from "../gpu-worker/models/unet_2d_condition.ts";
import { buildVaeDecoder, buildVaeEncoder, parseVaeConfig } from "../gpu-worker/models/autoencoder_kl.ts";
import { buildClipTextModel, parseClipTextConfig } from "../gpu-worker/models/clip_text_model.ts";
import {
  buildShapesWorldTokenizerFiles,
  SHAPESWORLD_MAX_LENGTH,
} from "../gpu-worker/shapesworld/vocabulary.ts";
import { parseArgs } from "node:util";
import { pathExists } from "../gpu-worker/fs.ts";

export const TINY_UNET_CONFIG = {
  _class_name: "UNet2DConditionModel",
  sample_size: 16,
  in_channels: 4,
  out_channels: 4,
  down_block_types: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  mid_block_type: "UNetMidBlock2DCrossAttn",
  block_out_channels: [32, 64, 64],
  layers_per_block: 1,
  attention_head_dim: 4,
  cross_attention_dim: 64,
  norm_num_groups: 16,
  norm_eps: 1e-5,
  flip_sin_to_cos: true,
  freq_shift: 0,
  downsample_padding: 1,
  act_fn: "silu",
};

export const TINY_VAE_CONFIG = {
  _class_name: "AutoencoderKL",
  in_channels: 3,
  out_channels: 3,
  down_block_types: ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  up_block_types: ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
  block_out_channels: [16, 32, 64],
  layers_per_block: 1,
  latent_channels: 4,
  norm_num_groups: 8,
  sample_size: 64,
  scaling_factor: 0.18215,
  act_fn: "silu",
};

export function tinyTextConfig(vocabSize: number) {
  return {
    architectures: ["CLIPTextModel"],
    hidden_size: 64,
    intermediate_size: 256,
    num_attention_heads: 4,
    num_hidden_layers: 2,
    max_position_embeddings: SHAPESWORLD_MAX_LENGTH,
    vocab_size: vocabSize,
    hidden_act: "quick_gelu",
    layer_norm_eps: 1e-5,
    bos_token_id: vocabSize - 2,
    eos_token_id: vocabSize - 1,
  };
}

/**
 * The tiny model's noise schedule. SD 1.5's scaled_linear schedule leaves too much signal at t = T for a
 * 16x16 latent: the mean colour of the image survives the noise (measured: the model then reads the
 * background colour off the initial noise and ignores the prompt). So: DDPM's linear betas rescaled to zero
 * terminal SNR, v-prediction (which zero terminal SNR needs), and trailing timesteps (Lin et al. 2023).
 */
export const TINY_SCHEDULER_CONFIG = {
  _class_name: "DDIMScheduler",
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: "linear",
  rescale_betas_zero_snr: true,
  clip_sample: false,
  set_alpha_to_one: false,
  steps_offset: 0,
  prediction_type: "v_prediction",
  timestep_spacing: "trailing",
};

function save(src: WeightSource): Uint8Array {
  const tensors: Record<string, { dtype: "F32"; shape: number[]; data: Float32Array }> = {};
  for (const [name, t] of src.produced) tensors[name] = { dtype: "F32", shape: t.shape, data: t.data };
  return writeSafetensors(tensors, { format: "pt" });
}

const json = (x: unknown) => JSON.stringify(x, null, 2) + "\n";

/** Writes the folder; returns parameter counts per component. */
export async function makeTinyModel(
  out: string,
  seed: number,
  o: { latentChannels?: number } = {},
): Promise<Record<string, number>> {
  const L = o.latentChannels ?? TINY_VAE_CONFIG.latent_channels;
  const unetConfig = { ...TINY_UNET_CONFIG, in_channels: L, out_channels: L };
  const vaeConfig = { ...TINY_VAE_CONFIG, latent_channels: L };
  const tok = buildShapesWorldTokenizerFiles();
  const vocabSize = Object.keys(tok.vocabJson).length;
  for (const d of ["unet", "vae", "text_encoder", "tokenizer", "scheduler"]) {
    await Deno.mkdir(`${out}/${d}`, { recursive: true });
  }

  const unetSrc = WeightSource.random(seed);
  buildUNet2DCondition(
    new ModelContext(new GraphBuilder("unet"), unetSrc),
    parseUNetConfig(unetConfig),
  );
  const vaeSrc = WeightSource.random(seed + 1);
  const vaeCfg = parseVaeConfig(vaeConfig);
  buildVaeEncoder(new ModelContext(new GraphBuilder("enc"), vaeSrc), vaeCfg);
  buildVaeDecoder(new ModelContext(new GraphBuilder("dec"), vaeSrc), vaeCfg);
  const textSrc = WeightSource.random(seed + 2);
  const textCfg = tinyTextConfig(vocabSize);
  const prefixed = WeightSource.random(seed + 2);
  buildClipTextModel(new ModelContext(new GraphBuilder("te"), prefixed), parseClipTextConfig(textCfg));
  // transformers stores the text tower under "text_model.".
  for (const [k, v] of prefixed.produced) textSrc.produced.set(`text_model.${k}`, v);

  await Deno.writeTextFile(
    `${out}/model_index.json`,
    json({
      _class_name: "StableDiffusionPipeline",
      _diffusers_version: "0.31.0",
      scheduler: ["diffusers", "DDIMScheduler"],
      text_encoder: ["transformers", "CLIPTextModel"],
      tokenizer: ["transformers", "CLIPTokenizer"],
      unet: ["diffusers", "UNet2DConditionModel"],
      vae: ["diffusers", "AutoencoderKL"],
      safety_checker: [null, null],
      feature_extractor: [null, null],
      requires_safety_checker: false,
    }),
  );
  await Deno.writeTextFile(`${out}/unet/config.json`, json(unetConfig));
  await Deno.writeFile(`${out}/unet/diffusion_pytorch_model.safetensors`, save(unetSrc));
  await Deno.writeTextFile(`${out}/vae/config.json`, json(vaeConfig));
  await Deno.writeFile(`${out}/vae/diffusion_pytorch_model.safetensors`, save(vaeSrc));
  await Deno.writeTextFile(`${out}/text_encoder/config.json`, json(textCfg));
  await Deno.writeFile(`${out}/text_encoder/model.safetensors`, save(textSrc));
  await Deno.writeTextFile(`${out}/scheduler/scheduler_config.json`, json(TINY_SCHEDULER_CONFIG));
  await Deno.writeTextFile(`${out}/tokenizer/vocab.json`, JSON.stringify(tok.vocabJson));
  await Deno.writeTextFile(`${out}/tokenizer/merges.txt`, "#version: 0.2\n" + tok.merges.join("\n") + "\n");
  await Deno.writeTextFile(`${out}/tokenizer/tokenizer.json`, JSON.stringify(tok.tokenizerJson));
  await Deno.writeTextFile(`${out}/tokenizer/tokenizer_config.json`, json(tok.tokenizerConfig));
  await Deno.writeTextFile(`${out}/tokenizer/special_tokens_map.json`, json(tok.specialTokensMap));
  return {
    unet: unetSrc.parameterCount(),
    vae: vaeSrc.parameterCount(),
    text_encoder: prefixed.parameterCount(),
  };
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { out: { type: "string" }, seed: { type: "string" }, force: { type: "boolean" } },
  });
  const out = values.out ?? "models/tiny-shapes";
  const pretrained = await pathExists(`${out}/PRETRAINED`);
  if (pretrained && !values.force) {
    console.error(
      `${out} holds pretrained weights (see ${out}/PRETRAINED); give another --out, or --force to overwrite`,
    );
    Deno.exit(2);
  }
  const counts = await makeTinyModel(out, Number(values.seed ?? 0));
  console.log(`wrote ${out}:`, counts);
}
