/**
 * LoRA files: the PEFT layout round-trips (factors, rank, alpha, info), older diffusers keys are read, and
 * malformed files are refused with RangeErrors naming the file and the tensor.
 */
import { assert, assertEquals, assertThrows } from "../testing.ts";
import { readSafetensors, writeSafetensors } from "../models/safetensors.ts";
import { decodeLora, encodeLora, LORA_FILE_NAME, type LoraAdapter, toLoraWeights } from "./lora.ts";

const Q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q";
const K = "mid_block.attentions.0.transformer_blocks.0.attn2.to_k";

function ramp(n: number, offset: number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + offset) * 0.1);
}

function adapter(rank: number): LoraAdapter {
  const modules: LoraAdapter["modules"] = new Map();
  modules.set(Q, { down: ramp(rank * 32, 1), up: ramp(32 * rank, 2), inFeatures: 32, outFeatures: 32 });
  modules.set(K, { down: ramp(rank * 64, 3), up: ramp(16 * rank, 4), inFeatures: 64, outFeatures: 16 });
  return { name: "rex", rank, alpha: 2 * rank, modules, info: { token: "sks", steps: 40 } };
}

type Tensors = Parameters<typeof writeSafetensors>[0];
const f32 = (shape: number[], offset = 0) => ({
  dtype: "F32" as const,
  shape,
  data: ramp(shape[0] * shape[1], offset),
});

Deno.test("encodeLora/decodeLora round-trip factors, rank, alpha and info in the PEFT layout", () => {
  const a = adapter(3);
  const bytes = encodeLora(a);
  const file = readSafetensors(bytes, "a.safetensors");
  assertEquals(
    file.names().sort(),
    [
      `unet.${Q}.lora_A.weight`,
      `unet.${Q}.lora_B.weight`,
      `unet.${K}.lora_A.weight`,
      `unet.${K}.lora_B.weight`,
    ].sort(),
  );
  assertEquals(file.entry(`unet.${K}.lora_A.weight`).shape, [3, 64]);
  assertEquals(file.entry(`unet.${K}.lora_B.weight`).shape, [16, 3]);
  assertEquals(file.metadata.lora_rank, "3");
  assertEquals(file.metadata.lora_alpha, "6");

  const b = decodeLora(bytes, "a.safetensors");
  assertEquals(b.name, "rex");
  assertEquals(b.rank, 3);
  assertEquals(b.alpha, 6);
  assertEquals(b.info, { name: "rex", token: "sks", steps: 40 });
  assertEquals([...b.modules.keys()].sort(), [K, Q].sort());
  for (const [path, m] of a.modules) {
    const d = b.modules.get(path)!;
    assertEquals([d.inFeatures, d.outFeatures], [m.inFeatures, m.outFeatures]);
    assertEquals(d.down, m.down, `${path} down`);
    assertEquals(d.up, m.up, `${path} up`);
  }
  // Encoding the decoded adapter gives the same bytes.
  assertEquals(encodeLora(b, { token: "sks", steps: 40 }), bytes);

  const w = toLoraWeights(b);
  assertEquals(w.alpha, 6);
  assertEquals(w.modules.get(Q)!.rank, 3);
  assertEquals(w.modules.get(K)!.up, a.modules.get(K)!.up);
  assertEquals(LORA_FILE_NAME, "pytorch_lora_weights.safetensors");
});

Deno.test("decodeLora: info passed to encodeLora replaces the adapter's; alpha defaults to the rank", () => {
  const bytes = encodeLora(adapter(2), { prompt: "a sks star" });
  assertEquals(decodeLora(bytes, "x").info, { name: "rex", prompt: "a sks star" });

  const bare = writeSafetensors({
    [`unet.${Q}.lora_A.weight`]: f32([4, 32]),
    [`unet.${Q}.lora_B.weight`]: f32([32, 4]),
  });
  const d = decodeLora(bare, "bare.safetensors");
  assertEquals([d.rank, d.alpha, d.name], [4, 4, "bare.safetensors"]);
});

Deno.test("decodeLora reads older diffusers keys (<module>.lora.down.weight / .lora.up.weight)", () => {
  const tensors: Tensors = {
    [`${Q}.lora.down.weight`]: f32([2, 32], 1),
    [`${Q}.lora.up.weight`]: f32([32, 2], 2),
    [`${K}.lora.down.weight`]: f32([2, 64], 3),
    [`${K}.lora.up.weight`]: f32([16, 2], 4),
  };
  const d = decodeLora(writeSafetensors(tensors, { lora_alpha: "1" }), "old.safetensors");
  assertEquals(d.rank, 2);
  assertEquals(d.alpha, 1);
  assertEquals([...d.modules.keys()].sort(), [K, Q].sort());
  assertEquals(d.modules.get(K)!.down, tensors[`${K}.lora.down.weight`].data);
  assertEquals(d.modules.get(K)!.up, tensors[`${K}.lora.up.weight`].data);
  assertEquals([d.modules.get(K)!.inFeatures, d.modules.get(K)!.outFeatures], [64, 16]);
});

Deno.test("decodeLora refuses mismatched ranks, a missing up tensor and files without LoRA tensors", () => {
  const mixed = writeSafetensors({
    [`unet.${Q}.lora_A.weight`]: f32([4, 32]),
    [`unet.${Q}.lora_B.weight`]: f32([32, 4]),
    [`unet.${K}.lora_A.weight`]: f32([2, 64]),
    [`unet.${K}.lora_B.weight`]: f32([16, 2]),
  });
  let e = assertThrows(() => decodeLora(mixed, "mixed.safetensors"), RangeError, "mixed.safetensors");
  assert(e.message.includes("rank") && e.message.includes(".lora_A.weight"), e.message);

  const pair = writeSafetensors({
    [`unet.${Q}.lora_A.weight`]: f32([4, 32]),
    [`unet.${Q}.lora_B.weight`]: f32([32, 3]),
  });
  e = assertThrows(() => decodeLora(pair, "pair.safetensors"), RangeError, "pair.safetensors");
  assert(
    e.message.includes(`unet.${Q}.lora_A.weight`) && e.message.includes(`unet.${Q}.lora_B.weight`),
    e.message,
  );

  const noUp = writeSafetensors({ [`unet.${Q}.lora_A.weight`]: f32([4, 32]) });
  e = assertThrows(() => decodeLora(noUp, "noup.safetensors"), RangeError, "noup.safetensors");
  assert(e.message.includes(`unet.${Q}.lora_A.weight`), e.message);

  const oldNoUp = writeSafetensors({ [`${Q}.lora.down.weight`]: f32([4, 32]) });
  assertThrows(() => decodeLora(oldNoUp, "old.safetensors"), RangeError, `${Q}.lora.down.weight`);

  const plain = writeSafetensors({ "conv_in.weight": f32([4, 4]) });
  assertThrows(() => decodeLora(plain, "unet.safetensors"), RangeError, "unet.safetensors: no LoRA tensors");
});
