import { assert, assertEquals, assertRejects } from "../testing.ts";
import {
  describeFullCheckpoint,
  encodeFullCheckpoint,
  FullCheckpointError,
  isFullCheckpointFile,
  materializeFullCheckpoint,
} from "./full_checkpoint.ts";
import {
  loadSafetensors,
  readSafetensors,
  type TensorData,
  writeSafetensors,
} from "../models/safetensors.ts";
import { copyFolder } from "../training/finetune.ts";
import { loadModelFolder } from "../models/model_folder.ts";
import { withTemp } from "../ort/test_scaffold.ts";

const BASE = new URL("../../models/tiny-shapes", import.meta.url).pathname;
const UNET = "unet/diffusion_pytorch_model.safetensors";

const TEXT_ENCODER = "text_encoder/model.safetensors";

/** Every F32 tensor of the safetensors file `path` shifted by `delta`, written back. */
async function shiftWeights(path: string, delta: number): Promise<void> {
  const f = await loadSafetensors(path);
  const out: Record<string, TensorData> = {};
  for (const n of f.names()) {
    assertEquals(f.entry(n).dtype, "F32", n);
    out[n] = { dtype: "F32", shape: f.entry(n).shape, data: f.float32(n).map((v) => v + delta) };
  }
  await Deno.writeFile(path, writeSafetensors(out, { format: "pt" }));
}

/**
 * A copy of the base folder whose UNet weights are all shifted by `delta` (a stand-in for a fine-tune), and its
 * text-encoder weights by `textEncoderDelta` where that is given.
 */
async function shiftedFolder(dir: string, delta: number, textEncoderDelta?: number): Promise<void> {
  await copyFolder(BASE, dir, (name) => !name.startsWith("."));
  await shiftWeights(`${dir}/${UNET}`, delta);
  if (textEncoderDelta !== undefined) await shiftWeights(`${dir}/${TEXT_ENCODER}`, textEncoderDelta);
}

Deno.test("a full checkpoint packs the fine-tuned UNet and unpacks into a model folder beside the base", async () => {
  await withTemp("full_ckpt_", async (dir) => {
    await shiftedFolder(`${dir}/tuned`, 0.25);
    const bytes = await encodeFullCheckpoint(`${dir}/tuned`, { info: { token: "sks" } });
    const file = readSafetensors(bytes, "ckpt");
    assert(isFullCheckpointFile(file));
    const base = await loadSafetensors(`${BASE}/${UNET}`);
    assertEquals(file.names().length, base.names().length);
    assertEquals(describeFullCheckpoint(file), { parts: ["unet"], info: { token: "sks" } });

    await materializeFullCheckpoint(file, BASE, `${dir}/served`);
    const served = await loadModelFolder(`${dir}/served`);
    const name = base.names()[0];
    const got = served.weights.unet.float32(name);
    const want = base.float32(name);
    for (let i = 0; i < got.length; i++) assert(Math.abs(got[i] - (want[i] + 0.25)) < 1e-6, `${name}[${i}]`);
    // Parts it does not carry are the base's own files, linked rather than copied.
    assert((await Deno.lstat(`${dir}/served/vae`)).isSymlink);
    assert((await Deno.lstat(`${dir}/served/text_encoder`)).isSymlink);
    assert((await Deno.lstat(`${dir}/served/unet/config.json`)).isSymlink);
    assertEquals(
      served.weights.text_encoder.float32(served.weights.text_encoder.names()[0]),
      (await loadModelFolder(BASE)).weights.text_encoder.float32(served.weights.text_encoder.names()[0]),
    );
  });
});

Deno.test("a full checkpoint with the text encoder replaces it too", async () => {
  await withTemp("full_ckpt_te_", async (dir) => {
    await shiftedFolder(`${dir}/tuned`, 0.25, -0.125);
    const file = readSafetensors(await encodeFullCheckpoint(`${dir}/tuned`, { withTextEncoder: true }), "c");
    assertEquals(describeFullCheckpoint(file).parts, ["unet", "text_encoder"]);
    await materializeFullCheckpoint(file, BASE, `${dir}/served`);
    assert(!(await Deno.lstat(`${dir}/served/text_encoder`)).isSymlink);
    assert(!(await Deno.lstat(`${dir}/served/text_encoder/model.safetensors`)).isSymlink);
    const served = (await loadModelFolder(`${dir}/served`)).weights;
    const base = (await loadModelFolder(BASE)).weights;
    // every served weight is the fine-tune's (base + its shift), none the base's own
    for (const [part, delta] of [["text_encoder", -0.125], ["unet", 0.25]] as const) {
      assertEquals(served[part].names(), base[part].names(), part);
      for (const n of base[part].names()) {
        const want = base[part].float32(n).map((v) => v + delta);
        assertEquals(served[part].float32(n), want, `${part} ${n}`);
      }
    }
  });
});

Deno.test("a checkpoint that does not fit the base model is refused with the tensor named, and nothing written", async () => {
  await withTemp("full_ckpt_bad_", async (dir) => {
    await shiftedFolder(`${dir}/tuned`, 0);
    const good = readSafetensors(await encodeFullCheckpoint(`${dir}/tuned`), "c");
    const tensors = (drop: string | null, reshape: string | null, extra?: string) => {
      const out: Record<string, TensorData> = {};
      for (const n of good.names()) {
        if (n === drop) continue;
        const e = good.entry(n);
        const data = good.float32(n);
        out[n] = n === reshape
          ? { dtype: "F32", shape: [data.length], data }
          : { dtype: "F32", shape: e.shape, data };
      }
      if (extra) out[extra] = { dtype: "F32", shape: [1], data: new Float32Array(1) };
      return readSafetensors(writeSafetensors(out, { checkpoint: "full" }), "bad.safetensors");
    };
    const first = good.names().find((n) => good.entry(n).shape.length > 1)!;
    await assertRejects(
      () => materializeFullCheckpoint(tensors(null, first), BASE, `${dir}/x`),
      FullCheckpointError,
      `"${first}" is F32`,
    );
    await assertRejects(
      () => materializeFullCheckpoint(tensors(first, null), BASE, `${dir}/x`),
      FullCheckpointError,
      "trained for another base model",
    );
    await assertRejects(
      () => materializeFullCheckpoint(tensors(null, null, "vae.decoder.conv_in.weight"), BASE, `${dir}/x`),
      FullCheckpointError,
      `found "vae.decoder.conv_in.weight"`,
    );
    assert(!(await Array.fromAsync(Deno.readDir(dir))).some((e) => e.name.startsWith("x")));
  });
});
