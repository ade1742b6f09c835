import { assert, assertEquals } from "../testing.ts";
import {
  MERGE_METHOD_REGISTRY,
  MERGE_METHODS,
  TRAINING_METHOD_REGISTRY,
  TRAINING_METHODS,
} from "../../shared/methods.ts";
import { MERGE_RUNS, servedMergeMethods, servedTrainingMethods, TRAINING_RUNS } from "./registry.ts";
import { servedCapabilities } from "../jobs/served.ts";

Deno.test("worker registry: every run is a shared registry method; the rest are the ones no worker runs yet", () => {
  for (const m of Object.keys(TRAINING_RUNS)) assert(m in TRAINING_METHOD_REGISTRY, `training run "${m}"`);
  for (const m of Object.keys(MERGE_RUNS)) assert(m in MERGE_METHOD_REGISTRY, `merge run "${m}"`);
  assertEquals(servedTrainingMethods(), ["dreambooth", "custom_diffusion", "concept_slider"]);
  assertEquals(TRAINING_METHODS.filter((m) => !TRAINING_RUNS[m]), ["cidm"]);
  assertEquals(servedMergeMethods(), ["custom_diffusion"]);
  assertEquals(MERGE_METHODS.filter((m) => !MERGE_RUNS[m]), ["linear", "cidm"]);
  for (const m of servedTrainingMethods()) assertEquals(typeof TRAINING_RUNS[m], "function", m);
});

Deno.test("worker registry: the registration advertises exactly what the registry and the prediction job serve", () => {
  assertEquals(servedCapabilities(), {
    methods: ["dreambooth", "custom_diffusion", "concept_slider"],
    merges: ["custom_diffusion"],
    features: ["img2img", "inpainting", "regions", "sliders"],
  });
});
