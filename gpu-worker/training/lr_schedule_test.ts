import { assert, assertThrows } from "../testing.ts";
import { learningRate, lrMultiplier, type LrScheduleConfig } from "./lr_schedule.ts";

function near(actual: number, expected: number, msg = "") {
  assert(Math.abs(actual - expected) < 1e-12, `${msg}: ${actual} vs ${expected}`);
}

Deno.test("constant ignores warmup; constant_with_warmup ramps linearly from 0", () => {
  for (const s of [0, 3, 1000]) {
    near(lrMultiplier({ name: "constant", warmupSteps: 10 }, s), 1, `constant ${s}`);
  }
  const cfg: LrScheduleConfig = { name: "constant_with_warmup", warmupSteps: 10 };
  near(lrMultiplier(cfg, 0), 0);
  near(lrMultiplier(cfg, 5), 0.5);
  near(lrMultiplier(cfg, 10), 1);
  near(lrMultiplier(cfg, 10_000), 1);
  near(learningRate(2e-4, cfg, 3), 6e-5);
});

Deno.test("linear: warmup then straight down to 0 at totalSteps", () => {
  const cfg: LrScheduleConfig = { name: "linear", warmupSteps: 10, totalSteps: 110 };
  near(lrMultiplier(cfg, 5), 0.5);
  near(lrMultiplier(cfg, 10), 1);
  near(lrMultiplier(cfg, 60), 0.5);
  near(lrMultiplier(cfg, 85), 0.25);
  near(lrMultiplier(cfg, 110), 0);
  near(lrMultiplier(cfg, 500), 0);
  near(lrMultiplier({ name: "linear", totalSteps: 4 }, 0), 1, "no warmup starts at full lr");
});

Deno.test("cosine: warmup then a half cosine to 0", () => {
  const cfg: LrScheduleConfig = { name: "cosine", warmupSteps: 10, totalSteps: 110 };
  near(lrMultiplier(cfg, 2), 0.2);
  near(lrMultiplier(cfg, 10), 1);
  near(lrMultiplier(cfg, 35), 0.5 * (1 + Math.cos(Math.PI / 4)));
  near(lrMultiplier(cfg, 60), 0.5);
  near(lrMultiplier(cfg, 110), 0);
  near(lrMultiplier(cfg, 160), 0.5, "past totalSteps the formula rises again, as in diffusers");
});

Deno.test("cosine_with_restarts and polynomial", () => {
  const r: LrScheduleConfig = { name: "cosine_with_restarts", totalSteps: 100, numCycles: 2 };
  near(lrMultiplier(r, 0), 1);
  near(lrMultiplier(r, 25), 0.5);
  near(lrMultiplier(r, 50), 1, "restart");
  near(lrMultiplier(r, 75), 0.5);
  near(lrMultiplier(r, 100), 0);
  const p: LrScheduleConfig = { name: "polynomial", warmupSteps: 0, totalSteps: 100, power: 2, lrEnd: 0 };
  near(learningRate(1, p, 50), 0.25);
  near(learningRate(1, p, 100), 0);
  const d: LrScheduleConfig = { name: "polynomial", totalSteps: 100 };
  near(learningRate(1e-4, d, 50), (1e-4 - 1e-7) * 0.5 + 1e-7);
  near(learningRate(1e-4, d, 150), 1e-7);
});

Deno.test("schedules refuse unknown names and missing totals", () => {
  assertThrows(
    () => lrMultiplier({ name: "warm" as "linear", totalSteps: 3 }, 0),
    RangeError,
    "unknown lr schedule",
  );
  assertThrows(() => lrMultiplier({ name: "cosine" }, 0), RangeError, "needs totalSteps");
  assertThrows(
    () => lrMultiplier({ name: "linear", totalSteps: 5, warmupSteps: 1.5 }, 0),
    RangeError,
    "warmupSteps",
  );
  assertThrows(() => learningRate(1e-8, { name: "polynomial", totalSteps: 5 }, 0), RangeError, "lrEnd");
});
