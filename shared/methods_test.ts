import { assert, assertEquals } from "../gpu-worker/testing.ts";
import {
  MERGE_METHOD_REGISTRY,
  MERGE_METHODS,
  perStepPrice,
  PREDICTION_FEATURES,
  predictionFeatures,
  TRAINING_METHOD_REGISTRY,
  TRAINING_METHODS,
  withDefaultSteps,
} from "./methods.ts";
import { AdapterKind } from "./adapters.ts";
import { PredictionInput } from "./prediction.ts";

/** The smallest valid input of each method (its required fields). */
const MINIMAL = {
  dreambooth: { images: ["file_1"] },
  custom_diffusion: { images: ["file_1"] },
  concept_slider: { positive: "very old", negative: "very young" },
  cidm: { images: ["file_1"], library: "pets" },
} as const;

Deno.test("registry: every training method has its schema, leased schema, default steps, price and adapter kind", () => {
  assertEquals(TRAINING_METHODS, ["dreambooth", "custom_diffusion", "concept_slider", "cidm"]);
  for (const m of TRAINING_METHODS) {
    const e = TRAINING_METHOD_REGISTRY[m];
    assertEquals(e.name, m);
    assert(e.title.length > 10, `${m}: a title for the docs`);
    const input = e.input.parse(MINIMAL[m]) as Record<string, unknown>;
    const steps = (withDefaultSteps(m, input as never) as { steps: number }).steps;
    assert(Number.isInteger(steps) && steps > 0, `${m}: default steps ${steps}`);
    assert(perStepPrice(m, input as never) > 0, `${m}: a price per step`);
    assert(AdapterKind.options.includes(e.adapterKind), `${m}: adapter kind ${e.adapterKind}`);
    assertEquals(e.input.safeParse({ ...MINIMAL[m], colour: "red" }).success, false, `${m}: unknown fields`);
  }
});

Deno.test("registry: METHODS.md's defaults come from one entry (DreamBooth 500, Custom Diffusion 250/500)", () => {
  const db = TRAINING_METHOD_REGISTRY.dreambooth.input.parse(MINIMAL.dreambooth);
  assertEquals([db.steps, withDefaultSteps("dreambooth", db).steps], [500, 500]);
  const cd = TRAINING_METHOD_REGISTRY.custom_diffusion.input;
  assertEquals(withDefaultSteps("custom_diffusion", cd.parse(MINIMAL.custom_diffusion)).steps, 250);
  const joint = cd.parse({
    concepts: [
      { images: ["a"], modifier_token: "<a1>", class_word: "cat" },
      { images: ["b"], modifier_token: "<b1>", class_word: "dog" },
    ],
  });
  assertEquals(withDefaultSteps("custom_diffusion", joint).steps, 500);
  assertEquals(
    withDefaultSteps("custom_diffusion", cd.parse({ ...MINIMAL.custom_diffusion, steps: 7 })).steps,
    7,
  );
  assertEquals(
    [
      perStepPrice("dreambooth", db),
      perStepPrice("dreambooth", { ...db, mode: "full" }),
      perStepPrice("custom_diffusion", cd.parse(MINIMAL.custom_diffusion)),
    ],
    [10, 40, 8],
  );
});

Deno.test("registry: merges have a price and the kind of adapter they make; features name their field", () => {
  assertEquals(MERGE_METHODS, ["custom_diffusion", "linear", "cidm"]);
  for (const m of MERGE_METHODS) {
    assert(MERGE_METHOD_REGISTRY[m].price > 0);
    assert(AdapterKind.options.includes(MERGE_METHOD_REGISTRY[m].adapterKind));
  }
  assertEquals(PREDICTION_FEATURES, ["img2img", "inpainting", "sliders", "regions", "reference_image"]);
  const plain = PredictionInput.parse({ prompt: "a red circle" });
  assertEquals(predictionFeatures(plain), [], "defaults ([] sliders, [] regions) ask for nothing");
  assertEquals(
    predictionFeatures(PredictionInput.parse({
      prompt: "x",
      image: "file_1",
      mask: "file_3",
      sliders: [{ id: "s", scale: 1 }],
      regions: [{ box: [0, 0, 0.5, 1], prompt: "a cat" }],
      reference_image: "file_2",
    })),
    ["img2img", "inpainting", "sliders", "regions", "reference_image"],
  );
});
