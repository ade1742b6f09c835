/**
 * Structural checks of SeeCoder and SeeCoder-PA against the official checkpoints' layout, with no weights
 * downloaded: the official configurations, built in shapes-only mode, must ask for exactly the parameters of
 * the official model (names with the `ctx.image.` prefix, shapes, count, total). The numbers were counted by
 * instantiating the official modules (SHI-Labs/Prompt-Free-Diffusion, lib/model_zoo/seecoder.py + swin.py,
 * configs/model/seecoder.yaml `seecoder` / `seecoder_pa` with `swin_large`) on Debian's torch:
 *
 *     SEECODER_SRC=/work/tmp_seecoder_src /usr/bin/python3 scripts/reference/make_seecoder_fixtures.py count
 *
 * which printed, for seecoder: 592 parameter tensors, 294114996 parameters, state_dict 616 keys (the other
 * 24 are the int64 `relative_position_index` buffers, which the graph computes); for seecoder_pa: 598,
 * 295358388, 622; and the sha256 of the sorted lines "name [shape]" checked below.
 */
import { assertEquals, assertThrows } from "../testing.ts";
import { GraphBuilder } from "../graph/builder.ts";
import { ModelContext } from "./layers.ts";
import { WeightSource } from "./weights.ts";
import { buildSeeCoder, parseSeeCoderConfig, SEECODER_OUTPUT, seecoderVariant } from "./seecoder.ts";

async function digest(src: WeightSource): Promise<string> {
  const lines = [...src.requested].map(([n, s]) => `${n} [${s.join(", ")}]`).sort().join("\n");
  const hash = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(lines));
  return Array.from(new Uint8Array(hash), (b) => b.toString(16).padStart(2, "0")).join("");
}

function build(pa: boolean) {
  const src = WeightSource.spec();
  const g = new GraphBuilder("seecoder");
  buildSeeCoder(new ModelContext(g, src), parseSeeCoderConfig({ qtransformer: { with_fea2d_pos: pa } }), {
    height: 512,
    width: 512,
  });
  return { src, g };
}

Deno.test("SeeCoder (official config): 592 tensors, 294,114,996 parameters, the checkpoint's names", async () => {
  const { src, g } = build(false);
  assertEquals(src.requested.size, 592);
  assertEquals(src.parameterCount(), 294_114_996);
  assertEquals(await digest(src), "a83b86d5b1ede3feea4927d2d4643311c6e551c992e3a7d3484b50e3ea5bda5a");
  assertEquals(src.requested.get("ctx.image.imencoder.patch_embed.proj.weight"), [192, 3, 4, 4]);
  assertEquals(
    src.requested.get("ctx.image.imencoder.layers.2.blocks.17.attn.relative_position_bias_table"),
    [
      529,
      24,
    ],
  );
  assertEquals(src.requested.get("ctx.image.imencoder.layers.2.downsample.reduction.weight"), [1536, 3072]);
  assertEquals(src.requested.get("ctx.image.imdecoder.inproj_layers.res5.0.weight"), [768, 1536, 1, 1]);
  assertEquals(src.requested.get("ctx.image.imdecoder.transformer.layers.5.self_attn.in_proj_weight"), [
    2304,
    768,
  ]);
  assertEquals(src.requested.get("ctx.image.imdecoder.level_embed"), [3, 768]);
  assertEquals(src.requested.get("ctx.image.qtransformer.init_query.weight"), [148, 768]);
  assertEquals(src.requested.get("ctx.image.qtransformer.transformer_feedforward_layers.8.linear1.weight"), [
    2048,
    768,
  ]);
  assertEquals(seecoderVariant(src.requested.keys()), "plain");
  assertEquals(g.outputs.find((o) => o.name === SEECODER_OUTPUT)?.shape, ["batch", 148, 768]);
});

Deno.test("SeeCoder-PA (official config): 598 tensors, 295,358,388 parameters", async () => {
  const { src } = build(true);
  assertEquals(src.requested.size, 598);
  assertEquals(src.parameterCount(), 295_358_388);
  assertEquals(await digest(src), "c336f545f5d9ed1b2cc9f8a999014f05621f000f17978706b2802b22db236cd8");
  assertEquals(src.requested.get("ctx.image.qtransformer.pe_layer.mlp.0.weight"), [768, 80]);
  assertEquals(src.requested.get("ctx.image.qtransformer.pe_layer.mlp.4.bias"), [768]);
  assertEquals(seecoderVariant(src.requested.keys()), "pa");
});

Deno.test("SeeCoder: names under another prefix; configs the graph cannot build are refused", () => {
  const src = WeightSource.spec();
  const cfg = parseSeeCoderConfig(
    JSON.parse(Deno.readTextFileSync(new URL("./fixtures/seecoder-tiny/config.json", import.meta.url))),
  );
  buildSeeCoder(new ModelContext(new GraphBuilder("s"), src), cfg, { height: 32, width: 32, prefix: "" });
  assertEquals(src.requested.get("qtransformer.input_proj.2.weight"), [32, 64, 1, 1]);
  assertEquals([...src.requested.keys()].filter((n) => n.startsWith("ctx.")), []);
  assertThrows(
    () => parseSeeCoderConfig({ imdecoder: { inchannels: { res2: 192, res3: 384 } } }),
    RangeError,
    "FPN",
  );
  assertThrows(() => parseSeeCoderConfig({ imencoder: { ape: true } }), RangeError, "ape");
  assertThrows(() => parseSeeCoderConfig({ qtransformer: { pre_norm: true } }), RangeError, "pre_norm");
});
