import { assert } from "../testing.ts";
import { runModelParity } from "./parity.ts";

const REF = new URL("../../../shared/reference/", import.meta.url).pathname;

for (const name of ["unet-sd1-tiny", "unet-sd2-tiny", "vae-tiny", "clip-text-tiny"]) {
  Deno.test(`parity with the reference implementation: ${name}`, async () => {
    const rows = await runModelParity(`${REF}${name}`);
    assert(rows.length > 0);
    for (const r of rows) {
      assert(
        r.relError < r.tolerance,
        `${name} ${r.output}: relative error ${r.relError.toExponential(3)} >= ${r.tolerance}`,
      );
    }
  });
}
