/**
 * The web playground in a real headless browser (Debian's `chromium`, driven by `playwright-core`) against
 * the embedded server with a worker on the tiny model: paste a key, upload a photo and train a DreamBooth
 * adapter (progress and the loss curve stream in), train a text slider, generate with the adapter and the
 * slider's range control, render a slider grid, and see the balance go down. A screenshot is written and its
 * path printed. Needs a Chromium: `CHROMIUM` or /usr/bin/chromium (`.ci/run` installs Debian's); without one
 * the test is skipped outside CI and fails in CI.
 */
import { chromium } from "playwright-core";
import { assert, assertEquals } from "../gpu-worker/testing.ts";
import { starPng, startE2E } from "./e2e_server.ts";

const CHROMIUM = Deno.env.get("CHROMIUM") ??
  ["/usr/bin/chromium", "/usr/bin/chromium-browser"].find((p) => {
    try {
      return Deno.statSync(p).isFile;
    } catch {
      return false;
    }
  });
const IN_CI = !!Deno.env.get("CI");
/** A job's last status. (Waits go through locators: the page's CSP refuses evaluated strings.) */
const ENDED = /^(succeeded|failed|canceled)$/;
if (!CHROMIUM && !IN_CI) console.warn("e2e_playground_test: no chromium found; skipped (set CHROMIUM=path)");

Deno.test({
  name:
    "playground in a headless browser: train with progress, generate with an adapter and a slider, a grid",
  ignore: !CHROMIUM && !IN_CI,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    assert(
      CHROMIUM,
      "CI needs a Chromium for the playground test (apt-get install chromium; or set CHROMIUM)",
    );
    const e = await startE2E();
    const dir = await Deno.makeTempDir({ prefix: "playground_" });
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on("pageerror", (err) => errors.push(err.message));
    try {
      const balance = async () => Number(await page.textContent("#balance"));
      const trainToEnd = async () => {
        await page.click("#train");
        await page.locator("#train-status").filter({ hasText: ENDED }).waitFor({ timeout: 90_000 });
        const shown = await page.textContent("#status") ?? "";
        assertEquals(await page.textContent("#train-status"), "succeeded", shown);
      };
      await page.goto(`${e.url}/`);
      assertEquals(new URL(page.url()).pathname, "/playground");
      await page.fill("#key", e.keyA);
      await page.click("#connect");
      await page.locator("#balance").filter({ hasText: /^\d+$/ }).waitFor();
      assertEquals(await page.inputValue("#model"), "tiny-shapes");
      const start = await balance();

      // DreamBooth from an uploaded photo: progress, the loss curve, then the adapter in the list.
      await Deno.writeFile(`${dir}/star.png`, starPng(0));
      await page.setInputFiles("#images", `${dir}/star.png`);
      await page.fill("#destination", "star");
      await page.fill("#steps", "3");
      await page.fill("#class_word", "star");
      await page.uncheck("#prior");
      await trainToEnd();
      // Progress events are throttled, so the curve has a point per event that came, not one per step.
      assert(Number(await page.getAttribute("#loss", "data-points")) >= 1, "the loss curve has points");
      assert(
        (await page.textContent("#train-eta"))!.startsWith("step 3/3"),
        await page.textContent("#train-eta") ?? "",
      );
      assert(await page.isVisible("[data-adapter]"), "the new adapter is listed");

      // A text slider, trained from the page.
      await page.selectOption("#method", "concept_slider");
      await page.fill("#destination", "size");
      await page.fill("#steps", "2");
      await page.fill("#positive", "a large red circle, white background");
      await page.fill("#negative", "a small red circle, white background");
      await page.fill("#target", "a red circle, white background");
      await trainToEnd();

      // Generate with the adapter on and the slider at 2 (its range input).
      await page.fill("#prompt", "a sks star");
      await page.fill("#gen-steps", "4");
      await page.check("[data-adapter]");
      await page.locator("[data-slider]").fill("2");
      await page.click("#generate");
      await page.waitForSelector("#outputs figure img", { timeout: 60_000 });
      const img = page.locator("#outputs figure img");
      await page.locator("#gen-status").filter({ hasText: ENDED }).waitFor({ timeout: 60_000 });
      const size = await img.evaluate((i) => {
        const el = i as unknown as { naturalWidth: number; naturalHeight: number };
        return [el.naturalWidth, el.naturalHeight];
      });
      assertEquals(size, [64, 64]);
      assert(await page.isChecked("[data-adapter]"), "the adapter stayed on");
      const made = (await (await e.api("/v1/predictions")).json()).data as {
        input: { adapters?: { scale: number }[]; sliders?: { scale: number }[] };
      }[];
      assertEquals(made.length, 1);
      assertEquals([made[0].input.adapters?.[0]?.scale, made[0].input.sliders?.[0]?.scale], [1, 2]);
      assertEquals(await page.textContent("#gen-status"), "succeeded");

      // A slider grid: one seed at three scales.
      await page.fill("#grid-scales", "-2,0,2");
      await page.click("#grid");
      await page.locator("#grid-status").filter({ hasText: /^done$/ }).waitFor({ timeout: 60_000 });
      assertEquals(await page.locator("#grid-row img").count(), 3);
      const captions = await page.locator("#grid-row figcaption").allTextContents();
      assertEquals(captions, ["scale -2", "scale 0", "scale 2"]);
      assert((await balance()) < start, "the balance went down");
      assertEquals(await page.textContent("#status"), "", "no error shown");

      const shot = `${dir}/playground.png`;
      await page.screenshot({ path: shot, fullPage: true });
      console.log(`playground screenshot: ${shot}`);
      assertEquals(errors, [], "no script errors");
    } finally {
      await browser.close();
      await e.stop();
    }
  },
});
