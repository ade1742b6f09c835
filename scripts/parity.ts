/**
 * `deno task parity DIR [DIR ...]`: checks the engine against a reference fixture folder laid out as
 * `../shared/reference/` (config.json, weights.safetensors, io.safetensors; the model kind told by the
 * config; a `schedulers` folder by its name). Prints each output's relative error and exits non-zero when
 * any is above its tolerance.
 */
import { runModelParity } from "../gpu-worker/models/parity.ts";
import { runSchedulerParity } from "../gpu-worker/schedulers/parity.ts";
import { pathExists } from "../gpu-worker/fs.ts";

if (import.meta.main) {
  const dirs = Deno.args.filter((a) => !a.startsWith("-"));
  if (!dirs.length) {
    console.error("usage: deno task parity DIR [DIR ...]");
    Deno.exit(2);
  }
  let failed = 0;
  for (const dir of dirs.map((d) => d.replace(/\/$/, ""))) {
    let rows;
    try {
      const isScheduler = !(await pathExists(`${dir}/weights.safetensors`));
      rows = isScheduler ? await runSchedulerParity(dir) : await runModelParity(dir);
    } catch (e) {
      console.log(`${dir}: ERROR ${(e as Error).message}`);
      failed++;
      continue;
    }
    for (const r of rows) {
      const ok = r.relError <= r.tolerance;
      if (!ok) failed++;
      console.log(
        `${ok ? "ok  " : "FAIL"} ${dir} ${r.output}: relative error ${
          r.relError.toExponential(3)
        } (tolerance ${r.tolerance})`,
      );
    }
  }
  if (failed) {
    console.log(`${failed} output(s) above tolerance`);
    Deno.exit(1);
  }
}
