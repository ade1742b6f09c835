/**
 * LoRA gradients through a whole UNet against central finite differences: the tiny SD 1.x config of
 * `shared/reference/unet-sd1-tiny` with random weights, LoRA slots on every attention's to_q/to_k/to_v, static
 * dims (batch 1, 8x8 latent, 5 tokens). The gradients of sum(out_sample * R) with respect to a few slots'
 * `down` and `up` factors (random, non-zero, rank 2, scale 1), and one per-rank `scale`, must match
 * directional derivatives and a few coordinates. What training a LoRA relies on, end to end: every layer between the slot and the output.
 *
 * Set GRADCHECK_REPORT=1 to print the reports.
 */
import { assert, assertEquals } from "../testing.ts";
import { Rng } from "../random.ts";
import { Tensor } from "../tensor.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { gradcheck } from "../graph/gradcheck.ts";
import { loraInputNames, ModelContext } from "./layers.ts";
import { WeightSource } from "./weights.ts";
import { buildUNet2DCondition, parseUNetConfig } from "./unet_2d_condition.ts";
import { loraRegionInput } from "./conditioning.ts";

const CONFIG = new URL("../../../shared/reference/unet-sd1-tiny/config.json", import.meta.url);
const RANK = 2;
const DIMS = { batch: 1, height: 8, width: 8, sequence: 5 };
const TARGETS = [/attn[12]\.to_[qkv]$/];

/** The slot inputs checked: self- and cross-attention, down, mid and up blocks, q, k and v. */
const CHECKED = [
  ["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", "down"],
  ["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", "up"],
  ["mid_block.attentions.0.transformer_blocks.0.attn2.to_k", "down"],
  ["up_blocks.2.attentions.2.transformer_blocks.0.attn1.to_v", "up"],
  ["up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v", "down"],
  ["down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_q", "scale"],
] as const;

async function loraGradcheck(
  rank: number | undefined,
  checked: readonly (readonly [string, "down" | "up" | "scale"])[],
) {
  const cfg = parseUNetConfig(JSON.parse(await Deno.readTextFile(CONFIG)));
  const rng = new Rng(7);
  let ctx: ModelContext | undefined;
  return await gradcheck({
    name: `unet-sd1-tiny LoRA (rank ${rank ?? "symbolic"})`,
    build: (g: GraphBuilder) => {
      ctx = new ModelContext(g, WeightSource.random(3), { lora: { targets: TARGETS, rank } });
      const output = buildUNet2DCondition(ctx, cfg, { ...DIMS, noOutput: true });
      const inputs = checked.map(([path, which]) => g.valueOf(loraInputNames(path)[which]));
      return { inputs, output };
    },
    feeds: () => {
      const feeds: Record<string, Tensor> = {
        sample: Tensor.f32([1, cfg.in_channels, 8, 8], rng.normal(cfg.in_channels * 64)),
        timestep: Tensor.f32([1], [421]),
        encoder_hidden_states: Tensor.f32(
          [1, DIMS.sequence, cfg.cross_attention_dim],
          rng.normal(DIMS.sequence * cfg.cross_attention_dim),
        ),
      };
      for (const m of ctx!.loraModules) {
        const n = loraInputNames(m.path);
        feeds[n.down] = Tensor.f32([RANK, m.inFeatures], rng.normal(RANK * m.inFeatures, 0.3));
        feeds[n.up] = Tensor.f32([m.outFeatures, RANK], rng.normal(m.outFeatures * RANK, 0.3));
        feeds[n.scale] = Tensor.f32([RANK], new Float32Array(RANK).fill(1));
      }
      // Every slot the config implies: 11 transformer blocks, 2 attentions each, q/k/v.
      assertEquals(ctx!.loraModules.length, 66, "LoRA slots");
      return feeds;
    },
    // Float32 round-off through ~40 layers puts ~1e-6 relative noise on the loss, so the steps are large:
    // 2^-4 for one coordinate of a factor (rms 0.3), 2^-6 along a direction (all 64 elements at once), and
    // 2^-4 for a scale (1, two elements). With the five-point stencil the truncation error stays below
    // round-off.
    eps: Object.fromEntries(
      checked.map(([path, which]) => [loraInputNames(path)[which], which === "scale" ? 2 ** -4 : 2 ** -2]),
    ),
    directions: 3,
    coordinates: 4,
    seed: 11,
  });
}

Deno.test("UNet LoRA gradients (static rank 2) match central finite differences", async () => {
  const r = await loraGradcheck(RANK, CHECKED);
  if (Deno.env.get("GRADCHECK_REPORT")) console.log(r.report);
  assert(r.ok);
  for (const x of r.inputs) assert(x.gradRms > 0, `${x.input}: zero gradient`);
});

Deno.test("UNet LoRA gradients (symbolic rank) match central finite differences", async () => {
  const r = await loraGradcheck(undefined, CHECKED.slice(2, 4));
  if (Deno.env.get("GRADCHECK_REPORT")) console.log(r.report);
  assert(r.ok);
});

/**
 * Conv LoRA (resnet conv1 3x3, a conv_shortcut 1x1, the stride-2 downsampler) and region-masked LoRA (a
 * regional graph: two soft region masks, slots whose rank rows are split between the whole image and region
 * 1 or 2, on a sequence linear, a conv and an attn2 to_k that reads the stacked contexts) against central
 * finite differences.
 */
Deno.test("conv LoRA and region-masked LoRA gradients match central finite differences", async () => {
  const cfg = parseUNetConfig(JSON.parse(await Deno.readTextFile(CONFIG)));
  const targets = [
    /resnets\.\d+\.(conv1|conv_shortcut)$/,
    /downsamplers\.0\.conv$/,
    /attn1\.to_q$/,
    /attn2\.to_k$/,
  ];
  const checked = [
    ["down_blocks.0.resnets.0.conv1", "down"],
    ["down_blocks.0.resnets.0.conv1", "up"],
    ["down_blocks.0.downsamplers.0.conv", "down"],
    ["up_blocks.1.resnets.0.conv_shortcut", "up"],
    ["down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q", "down"],
    ["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k", "down"],
  ] as const;
  const rng = new Rng(9);
  const R = 2, H = 8, W = 8;
  let ctx: ModelContext | undefined;
  const r = await gradcheck({
    name: "unet-sd1-tiny conv + regional LoRA",
    build: (g: GraphBuilder) => {
      ctx = new ModelContext(g, WeightSource.random(3), {
        lora: { targets, rank: RANK },
        conditioning: { regions: true },
      });
      const output = buildUNet2DCondition(ctx, cfg, { ...DIMS, noOutput: true });
      return { inputs: checked.map(([path, which]) => g.valueOf(loraInputNames(path)[which])), output };
    },
    feeds: () => {
      const D = cfg.cross_attention_dim;
      const masks = new Float32Array(R * H * W);
      for (let y = 0; y < H; y++) {
        for (let x = 0; x < W; x++) {
          masks[y * W + x] = Math.min(1, Math.max(0, (4.5 - x) / 2)); // left, soft edge
          masks[H * W + y * W + x] = y >= 3 ? 0.8 : 0; // bottom, overlapping the left one
        }
      }
      const feeds: Record<string, Tensor> = {
        sample: Tensor.f32([1, cfg.in_channels, H, W], rng.normal(cfg.in_channels * H * W)),
        timestep: Tensor.f32([1], [421]),
        encoder_hidden_states: Tensor.f32([1, DIMS.sequence, D], rng.normal(DIMS.sequence * D)),
        region_hidden_states: Tensor.f32([R, 1, DIMS.sequence, D], rng.normal(R * DIMS.sequence * D)),
        region_masks: Tensor.f32([R, 1, H, W], masks),
      };
      let k = 0;
      for (const m of ctx!.loraModules) {
        const n = loraInputNames(m.path);
        feeds[n.down] = Tensor.f32([RANK, m.inFeatures], rng.normal(RANK * m.inFeatures, 0.3));
        feeds[n.up] = Tensor.f32([m.outFeatures, RANK], rng.normal(m.outFeatures * RANK, 0.3));
        feeds[n.scale] = Tensor.f32([RANK], new Float32Array(RANK).fill(1));
        // Row 0 acts on the whole image, row 1 in region 1 or 2 (alternating by slot).
        feeds[loraRegionInput(m.path)] = Tensor.i64([RANK], [0, 1 + (k++ % 2)]);
      }
      assert(ctx!.loraModules.some((m) => m.kernel === 3) && ctx!.loraModules.some((m) => m.kernel === 1));
      return feeds;
    },
    eps: Object.fromEntries(checked.map(([path, which]) => [loraInputNames(path)[which], 2 ** -2])),
    directions: 3,
    coordinates: 4,
    seed: 13,
  });
  if (Deno.env.get("GRADCHECK_REPORT")) console.log(r.report);
  assert(r.ok, r.report);
  for (const x of r.inputs) assert(x.gradRms > 0, `${x.input}: zero gradient`);
});
