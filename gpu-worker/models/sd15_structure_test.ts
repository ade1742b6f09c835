/**
 * Structural checks against Stable Diffusion 1.5 with no weights downloaded: the SD 1.5 configs, built in
 * shapes-only mode, must ask for exactly diffusers' tensors (counts and parameter totals counted with the
 * reference implementations), and a few well-known names and shapes.
 */
import { assertEquals } from "../testing.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { ModelContext } from "./layers.ts";
import { WeightSource } from "./weights.ts";
import { buildUNet2DCondition, parseUNetConfig } from "./unet_2d_condition.ts";
import { buildVaeDecoder, buildVaeEncoder, parseVaeConfig } from "./autoencoder_kl.ts";
import { buildClipTextModel, parseClipTextConfig } from "./clip_text_model.ts";

export const SD15_UNET = {
  sample_size: 64,
  in_channels: 4,
  out_channels: 4,
  down_block_types: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  block_out_channels: [320, 640, 1280, 1280],
  layers_per_block: 2,
  attention_head_dim: 8,
  cross_attention_dim: 768,
  norm_num_groups: 32,
  norm_eps: 1e-5,
  flip_sin_to_cos: true,
  freq_shift: 0,
  downsample_padding: 1,
  mid_block_scale_factor: 1,
  act_fn: "silu",
  center_input_sample: false,
};

export const SD15_VAE = {
  in_channels: 3,
  out_channels: 3,
  down_block_types: Array(4).fill("DownEncoderBlock2D"),
  up_block_types: Array(4).fill("UpDecoderBlock2D"),
  block_out_channels: [128, 256, 512, 512],
  layers_per_block: 2,
  act_fn: "silu",
  latent_channels: 4,
  norm_num_groups: 32,
  sample_size: 512,
  scaling_factor: 0.18215,
};

export const SD15_TEXT = {
  architectures: ["CLIPTextModel"],
  hidden_size: 768,
  intermediate_size: 3072,
  num_attention_heads: 12,
  num_hidden_layers: 12,
  max_position_embeddings: 77,
  vocab_size: 49408,
  hidden_act: "quick_gelu",
  layer_norm_eps: 1e-5,
  bos_token_id: 49406,
  eos_token_id: 49407,
};

Deno.test("SD 1.5 UNet: 686 tensors, 859,520,964 parameters, diffusers' names", () => {
  const src = WeightSource.spec();
  buildUNet2DCondition(new ModelContext(new GraphBuilder("unet"), src), parseUNetConfig(SD15_UNET));
  assertEquals(src.requested.size, 686);
  assertEquals(src.parameterCount(), 859_520_964);
  assertEquals(src.requested.get("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"), [
    320,
    768,
  ]);
  assertEquals(src.requested.get("mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj.weight"), [
    10240,
    1280,
  ]);
  assertEquals(src.requested.get("up_blocks.1.resnets.0.conv_shortcut.weight"), [1280, 2560, 1, 1]);
  assertEquals(src.requested.get("up_blocks.3.attentions.2.proj_out.weight"), [320, 320, 1, 1]);
  assertEquals(src.requested.get("time_embedding.linear_1.weight"), [1280, 320]);
});

Deno.test("SD 1.5 VAE: 248 tensors, 83,653,863 parameters", () => {
  const src = WeightSource.spec();
  const cfg = parseVaeConfig(SD15_VAE);
  buildVaeEncoder(new ModelContext(new GraphBuilder("enc"), src), cfg);
  buildVaeDecoder(new ModelContext(new GraphBuilder("dec"), src), cfg);
  assertEquals(src.requested.size, 248);
  assertEquals(src.parameterCount(), 83_653_863);
  assertEquals(src.requested.get("encoder.mid_block.attentions.0.to_q.weight"), [512, 512]);
  assertEquals(src.requested.get("decoder.up_blocks.3.resnets.0.conv_shortcut.weight"), [128, 256, 1, 1]);
});

Deno.test("SD 1.5 text encoder (CLIP ViT-L/14): 123,060,480 parameters", () => {
  const spec = WeightSource.spec();
  buildClipTextModel(new ModelContext(new GraphBuilder("te"), spec), parseClipTextConfig(SD15_TEXT));
  assertEquals(spec.parameterCount(), 123_060_480);
  assertEquals(spec.requested.get("encoder.layers.11.mlp.fc1.weight"), [3072, 768]);
});
