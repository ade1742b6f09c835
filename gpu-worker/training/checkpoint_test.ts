import { assert, assertEquals, assertRejects, assertThrows } from "../testing.ts";
import {
  CheckpointError,
  decodeCheckpoint,
  encodeCheckpoint,
  latestCheckpoint,
  listCheckpoints,
  loadCheckpoint,
  saveCheckpoint,
  type TrainingCheckpoint,
} from "./checkpoint.ts";

function sample(step: number): TrainingCheckpoint {
  const w = Float32Array.of(0.1, -0.2, 1 / 3, step);
  return {
    step,
    params: { b: { shape: [1], data: Float32Array.of(7) }, "unet.lora.w": { shape: [2, 2], data: w } },
    optimizer: {
      m: { b: Float32Array.of(0.5), "unet.lora.w": w.map((x) => x / 10) },
      v: { b: Float32Array.of(0.25), "unet.lora.w": w.map((x) => x * x) },
      steps: { b: step - 1, "unet.lora.w": step },
    },
    config: { seed: 3, nested: { rank: 4 } },
    losses: Array.from({ length: step }, (_, i) => 1 / (i + 3) + 1e-17 * i),
  };
}

Deno.test("a checkpoint round-trips exactly through safetensors bytes", () => {
  const c = sample(4);
  const back = decodeCheckpoint(encodeCheckpoint(c), "mem");
  assertEquals(back, c);
  assert(back.losses.every((x, i) => Object.is(x, c.losses[i])), "losses bit-identical");
});

Deno.test("non-finite losses and foreign files are refused", () => {
  const c = sample(2);
  c.losses[1] = NaN;
  assertThrows(() => encodeCheckpoint(c), CheckpointError, "refusing to save");
  assertThrows(() => decodeCheckpoint(new Uint8Array(3), "x.safetensors"), Error, "x.safetensors");
});

Deno.test("saving rotates to the last K by step number, atomically, and finds the latest", async () => {
  const dir = await Deno.makeTempDir();
  try {
    assertEquals(await latestCheckpoint(`${dir}/absent`), null);
    for (const s of [5, 9, 10, 15]) await saveCheckpoint(dir, sample(s), { keep: 2 });
    const names = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assertEquals(names, ["checkpoint-10.safetensors", "checkpoint-15.safetensors"]);
    assertEquals(await latestCheckpoint(dir), `${dir}/checkpoint-15.safetensors`);
    assertEquals((await loadCheckpoint(`${dir}/checkpoint-10.safetensors`)).step, 10);

    // A crash mid-write leaves only a temp file: it is never "latest", and the next save removes it.
    Deno.writeFileSync(
      `${dir}/.checkpoint-20.safetensors.abc.tmp`,
      encodeCheckpoint(sample(20)).subarray(0, 50),
    );
    assertEquals(await latestCheckpoint(dir), `${dir}/checkpoint-15.safetensors`);
    await saveCheckpoint(dir, sample(20), { keep: 2 });
    assertEquals((await listCheckpoints(dir)).map((c) => c.step), [15, 20]);
    assertEquals([...Deno.readDirSync(dir)].filter((e) => e.name.endsWith(".tmp")).length, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a truncated checkpoint fails naming the file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/checkpoint-3.safetensors`;
    Deno.writeFileSync(path, encodeCheckpoint(sample(3)).subarray(0, 200));
    await assertRejects(() => loadCheckpoint(path), Error, path);
    await assertRejects(() => loadCheckpoint(`${dir}/none.safetensors`), CheckpointError, "cannot read");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
