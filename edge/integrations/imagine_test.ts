import { assert, assertEquals, assertThrows } from "../../gpu-worker/testing.ts";
import { DISCORD_IMAGINE_COMMAND } from "../../shared/integrations.ts";
import {
  CommandError,
  imagineOptions,
  imagineOptionsFromText,
  OPTION_NAMES,
  parseSlider,
} from "./imagine.ts";

Deno.test("imagine options: a prompt with adapter, slider, steps and seed", () => {
  assertEquals(
    imagineOptions({ prompt: " a star ", adapter: "rex", slider: "sld_1:-2.5", steps: 4, seed: 0 }),
    {
      prompt: "a star",
      adapter: "rex",
      slider: { id: "sld_1", scale: -2.5 },
      steps: 4,
      seed: 0,
    },
  );
  assertEquals(parseSlider("size:3"), { id: "size", scale: 3 });
});

Deno.test("imagine options: what is wrong is named, with what was expected", () => {
  const wrong = (raw: Record<string, unknown>, includes: string) => {
    const e = assertThrows(() => imagineOptions(raw), CommandError);
    assert(e.message.includes(includes), e.message);
  };
  wrong({}, "needs a prompt");
  wrong({ prompt: "  " }, "needs a prompt");
  wrong({ prompt: "x".repeat(2001) }, "at most 2000");
  wrong({ prompt: "x", slider: "size" }, "id:scale");
  wrong({ prompt: "x", slider: "size:11" }, "-10 to 10");
  wrong({ prompt: "x", steps: 0 }, "steps: expected a whole number from 1 to 50");
  wrong({ prompt: "x", steps: 2.5 }, "whole number");
  wrong({ prompt: "x", seed: -1 }, "seed");
  wrong({ prompt: 5 }, "prompt: expected text");
});

Deno.test("imagine options from a slash command's text: flags anywhere, --name=value, Slack's escapes", () => {
  assertEquals(imagineOptionsFromText("a <rex> &amp; a cat --steps 4 on grass --slider=size:2"), {
    prompt: "a <rex> & a cat on grass",
    slider: { id: "size", scale: 2 },
    steps: 4,
  });
  assertEquals(imagineOptionsFromText("a &lt;rex&gt; --adapter rex --seed 9 --model tiny-shapes"), {
    prompt: "a <rex>",
    adapter: "rex",
    seed: 9,
    model: "tiny-shapes",
  });
  const e = assertThrows(() => imagineOptionsFromText("a star --size 9"), CommandError);
  assert(e.message.includes("unknown option --size") && e.message.includes("--adapter"), e.message);
  assertThrows(() => imagineOptionsFromText("a star --steps"), CommandError, "--steps needs a value");
  assertThrows(() => imagineOptionsFromText(""), CommandError, "needs a prompt");
  assertThrows(() => imagineOptionsFromText("--prompt x"), CommandError, "unknown option --prompt");
});

Deno.test("imagine options: the Discord command registers exactly the options the server reads", () => {
  assertEquals(DISCORD_IMAGINE_COMMAND.options.map((o) => o.name), [...OPTION_NAMES]);
  assertEquals(DISCORD_IMAGINE_COMMAND.options.filter((o) => "required" in o).map((o) => o.name), ["prompt"]);
});
