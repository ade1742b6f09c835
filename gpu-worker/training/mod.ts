/**
 * The model-agnostic training engine: AdamW, lr schedules, gradient clipping, checkpoints, the training loop
 * and training-image data handling. Models plug in through `runTraining`'s `GradientFn`.
 */
export * from "./optimizer.ts";
export * from "./lr_schedule.ts";
export * from "./grad_clip.ts";
export * from "./checkpoint.ts";
export * from "./loop.ts";
export * from "./data.ts";
