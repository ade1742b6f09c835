/**
 * Scaffolding for tests that run the engine: a temporary folder removed afterwards, and an engine runner
 * terminated afterwards, whatever the test does.
 *
 * @example
 * ```ts
 * await withTemp("my_test_", (dir) => withRunner(async (runner) => { ... }));
 * ```
 */
import { EngineRunner } from "./runner.ts";

export async function withTemp<T>(prefix: string, fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

export async function withRunner<T>(fn: (runner: EngineRunner) => Promise<T>): Promise<T> {
  const runner = new EngineRunner();
  try {
    return await fn(runner);
  } finally {
    runner.terminate();
  }
}
