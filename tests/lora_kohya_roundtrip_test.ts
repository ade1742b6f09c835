/**
 * A LoRA with convolution slots (C3Lier: attn1 linears plus resnet and sampler convs) written in diffusers'
 * layout, converted to kohya's keys by the edge's download converter, read back by the worker: the same
 * factors (4-D conv tensors in the file), and the same pixels when applied; applied at all (the conv slots
 * ride on the pipeline's wide UNet variant).
 */
import { assert, assertEquals } from "../gpu-worker/testing.ts";
import { EngineRunner } from "../gpu-worker/ort/runner.ts";
import { StableDiffusionPipeline } from "../gpu-worker/pipelines/stable_diffusion.ts";
import {
  decodeLora,
  encodeLora,
  kohyaModulePath,
  type LoraAdapter,
  toLoraWeights,
} from "../gpu-worker/adapters/lora.ts";
import { loraTargets } from "../gpu-worker/models/lora_targets.ts";
import { readSafetensors } from "../gpu-worker/models/safetensors.ts";
import { convertLora } from "../edge/lora_formats.ts";
import { Rng } from "../gpu-worker/random.ts";

const TINY = new URL("../models/tiny-shapes", import.meta.url).pathname;

Deno.test("kohya module names map back to diffusers paths", () => {
  assertEquals(
    kohyaModulePath("unet", "down_blocks_0_attentions_1_transformer_blocks_0_attn1_to_out_0"),
    "down_blocks.0.attentions.1.transformer_blocks.0.attn1.to_out.0",
  );
  assertEquals(
    kohyaModulePath("unet", "up_blocks_1_resnets_2_conv_shortcut"),
    "up_blocks.1.resnets.2.conv_shortcut",
  );
  assertEquals(
    kohyaModulePath("unet", "mid_block_resnets_0_time_emb_proj"),
    "mid_block.resnets.0.time_emb_proj",
  );
  assertEquals(
    kohyaModulePath("unet", "down_blocks_1_downsamplers_0_conv"),
    "down_blocks.1.downsamplers.0.conv",
  );
  assertEquals(
    kohyaModulePath("te", "text_model_encoder_layers_0_self_attn_q_proj"),
    "encoder.layers.0.self_attn.q_proj",
  );
});

Deno.test("a conv LoRA round-trips through kohya keys and applies identically", async () => {
  const runner = new EngineRunner();
  try {
    const pipe = await StableDiffusionPipeline.load(TINY, runner);
    const targets = loraTargets("c3lier");
    const rank = 2, rng = new Rng(4);
    const modules: LoraAdapter["modules"] = new Map();
    for (const m of pipe.servableLoraModules.values()) {
      if (!targets.some((r) => r.test(m.path))) continue;
      modules.set(m.path, {
        down: rng.normal(rank * m.inFeatures, 0.2),
        up: rng.normal(m.outFeatures * rank, 0.2),
        inFeatures: m.inFeatures,
        outFeatures: m.outFeatures,
        kernel: m.kernel,
      });
    }
    const convs = [...modules.values()].filter((m) => m.kernel === 3).length;
    assert(convs > 4, `3x3 conv slots: ${convs}`);
    const original: LoraAdapter = { name: "c3", rank, alpha: 1, modules };
    const kohya = convertLora(encodeLora(original), "kohya", "c3.safetensors");
    const file = readSafetensors(kohya, "kohya");
    assertEquals(file.entry("lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight").shape.length, 4);
    assertEquals(file.entry("lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight").shape.slice(2), [1, 1]);
    const back = decodeLora(kohya, "kohya.safetensors");
    // A file stored in kohya keys (an imported slider) converts too: to kohya as it is, to PEFT by module.
    const again = readSafetensors(convertLora(kohya, "kohya", "k2"), "k2");
    assertEquals(again.names().sort(), file.names().sort());
    const peft = readSafetensors(convertLora(kohya, "peft", "p"), "p");
    assert(peft.has("base_model.model.down_blocks.0.resnets.0.conv1.lora_A.weight"), peft.names()[0]);
    assertEquals(peft.metadata.lora_alpha, "1");
    assertEquals(back.rank, rank);
    assertEquals(back.alpha, 1);
    assertEquals([...back.modules.keys()].sort(), [...modules.keys()].sort());
    for (const [path, m] of modules) {
      const b = back.modules.get(path)!;
      assertEquals(b.down, m.down, path);
      assertEquals(b.up, m.up, path);
      assertEquals(b.kernel ?? 0, m.kernel, path);
    }
    const o = { prompt: "a red circle, white background", steps: 4, seed: 2, guidanceScale: 3 };
    const none = await pipe.generate(o);
    const a = await pipe.generate({ ...o, adapters: [{ lora: toLoraWeights(original), scale: 1 }] });
    const b = await pipe.generate({ ...o, adapters: [{ lora: toLoraWeights(back), scale: 1 }] });
    assertEquals(b.images[0].rgb, a.images[0].rgb);
    const moved = a.images[0].rgb.reduce((s, v, i) => s + Math.abs(v - none.images[0].rgb[i]), 0) /
      a.images[0].rgb.length;
    assert(moved > 2, `mean pixel change ${moved}`);
  } finally {
    runner.terminate();
  }
});
