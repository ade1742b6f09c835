import { z } from "zod";
import { assertEquals } from "../testing.ts";
import { AdapterError, InputError, JobInputError, NotServedError, WeightsError } from "../input_error.ts";
import { CheckpointError, decodeCheckpoint } from "../training/checkpoint.ts";
import { FullCheckpointError } from "../adapters/full_checkpoint.ts";
import { decodeCustomDiffusion } from "../adapters/custom_diffusion.ts";
import { writeSafetensors } from "../models/safetensors.ts";
import { errorMessage, isPermanentError, resolveBlob } from "./job.ts";

Deno.test("permanent failures are the input's error classes; built-in errors are retried", () => {
  const permanent = [
    new InputError("x"),
    new WeightsError("x"),
    new AdapterError("x"),
    new CheckpointError("x"),
    new FullCheckpointError("x"),
    new NotServedError("x"),
    new JobInputError("x"),
    z.object({ a: z.number() }).safeParse({}).error!,
  ];
  for (const e of permanent) assertEquals(isPermanentError(e), true, e.name);
  // A RangeError or TypeError may be our own bug, or the machine's: the job is retried, then dead-lettered.
  for (const e of [new RangeError("x"), new TypeError("x"), new SyntaxError("x"), new Error("x"), "x"]) {
    assertEquals(isPermanentError(e), false, String(e));
  }
  assertEquals([new AdapterError("x").name, new FullCheckpointError("x").name], [
    "AdapterError",
    "FullCheckpointError",
  ]);
});

Deno.test("decoding what a job brought throws the input's error classes, saying what was expected", () => {
  const notCd = writeSafetensors({
    "unet.foo.weight": { dtype: "F32", shape: [2], data: new Float32Array(2) },
  });
  let e: unknown = null;
  try {
    decodeCustomDiffusion(notCd, "cat.safetensors");
  } catch (err) {
    e = err;
  }
  assertEquals(e instanceof AdapterError && isPermanentError(e), true, String(e));
  assertEquals(
    (e as Error).message,
    'cat.safetensors: unexpected tensor "unet.foo.weight" [2] in a Custom Diffusion file',
  );
  try {
    decodeCheckpoint(writeSafetensors({}, { format: "x" }), "job checkpoint");
    e = null;
  } catch (err) {
    e = err;
  }
  assertEquals(e instanceof CheckpointError && e instanceof InputError, true, String(e));
  try {
    resolveBlob({ id: "job_1", blobs: {} }, "file_x", "input.image", "file");
    e = null;
  } catch (err) {
    e = err;
  }
  assertEquals(e instanceof JobInputError, true);
  assertEquals(errorMessage(e), 'input.image: no blob for file "file_x" in job job_1');
});
