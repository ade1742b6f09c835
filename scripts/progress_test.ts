import { assert, assertEquals } from "../gpu-worker/testing.ts";
import { Progress, progressMode } from "./progress.ts";

function sinks() {
  const out: string[] = [], err: string[] = [];
  const dec = new TextDecoder();
  const sink = (to: string[]) => ({ writeSync: (b: Uint8Array) => (to.push(dec.decode(b)), b.length) });
  return { out, err, sinks: { stdout: sink(out), stderr: sink(err) } };
}

Deno.test("progressMode: --json wins; else a bar only on a terminal", () => {
  assertEquals(progressMode(true, { isTerminal: () => false }), "json");
  assertEquals(progressMode(false, { isTerminal: () => true }), "bar");
  assertEquals(progressMode(undefined, { isTerminal: () => false }), "off");
});

Deno.test("Progress: a bar on stderr, JSON lines on stdout, nothing when off", () => {
  const bar = sinks();
  const p = new Progress("train", "bar", bar.sinks);
  p.update({ step: 5, total: 10, loss: 0.25, stepsPerSecond: 2, etaSeconds: 2.5 });
  p.log("checkpoint");
  assert(p.result({ file: "x" }) === false);
  assertEquals(bar.out, []);
  assert(
    bar.err[0].startsWith("\rtrain [############............] 5/10 loss 0.2500 2.00/s eta 3s"),
    bar.err[0],
  );
  assertEquals(bar.err.slice(1), ["\n", "checkpoint\n"]);

  const json = sinks();
  const q = new Progress("eval", "json", json.sinks);
  q.update({ step: 1, total: 4 });
  q.log("note");
  assert(q.result({ colour: 0.8 }));
  assertEquals(json.err, []);
  const lines = json.out.map((l) => JSON.parse(l));
  assertEquals([lines[0].type, lines[0].label, lines[0].step, lines[0].total, "loss" in lines[0]], [
    "progress",
    "eval",
    1,
    4,
    false,
  ]);
  assertEquals(lines.slice(1), [{ type: "log", label: "eval", message: "note" }, {
    type: "result",
    label: "eval",
    colour: 0.8,
  }]);

  const off = sinks();
  const r = new Progress("x", "off", off.sinks);
  r.update({ step: 1, total: 2 });
  r.log("hidden");
  r.result({});
  assertEquals([off.out, off.err], [[], []]);
});
