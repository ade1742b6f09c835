import { assert, assertEquals } from "../gpu-worker/testing.ts";
import { PredictionInput } from "./prediction.ts";

Deno.test("prediction input: defaults filled, unknown and out-of-range fields refused by name", () => {
  const ok = PredictionInput.parse({ prompt: "a red circle" });
  assertEquals([ok.steps, ok.guidance_scale, ok.scheduler, ok.num_outputs], [20, undefined, "ddim", 1]);
  const bad = PredictionInput.safeParse({ prompt: "x", steps: 0, colour: "red", scheduler: "lms" });
  assert(!bad.success);
  const paths = bad.error.issues.map((i) => i.path.join(".") || i.message);
  assert(paths.includes("steps") && paths.includes("scheduler"), JSON.stringify(paths));
  assert(bad.error.issues.some((i) => i.code === "unrecognized_keys"), "unknown fields are refused");
});
