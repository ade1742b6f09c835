import { assertEquals, assertThrows } from "../gpu-worker/testing.ts";
import { ApiProblem } from "./problem.ts";
import { type RoutableAdapter, routePrompt } from "./prompt_routing.ts";

const a = (
  id: string,
  name: string,
  token: string | null,
  over: Partial<RoutableAdapter> = {},
): RoutableAdapter => ({
  id,
  name,
  token,
  kind: "concept",
  base_model: "tiny",
  class_word: null,
  created_at: "2024-01-01",
  ...over,
});
const none = { adapters: [], sliders: [] };

Deno.test("prompt routing: <name> becomes the trigger phrase; the newest of a name wins", () => {
  const all = [
    a("old", "rex", "sks", { class_word: "dog" }),
    a("new", "rex", "zwx", { class_word: "dog", created_at: "2024-02-01" }),
    a("cat", "whiskers", "<new1>", { class_word: "cat" }),
  ];
  const r = routePrompt("<rex> and <whiskers> play", none, all, "tiny");
  assertEquals(r.prompt, "zwx dog and <new1> cat play");
  assertEquals(r.adapters, [{ id: "new", scale: 1, routed: true }, { id: "cat", scale: 1, routed: true }]);
});

Deno.test("prompt routing: bare tokens as whole words; explicit adapters keep their scale; sliders by name", () => {
  const all = [a("x", "rex", "sks"), a("s", "age", null, { kind: "slider" }), a("c", "cd", "<new1>")];
  assertEquals(routePrompt("a sksdog and asks", none, all, "tiny").adapters, []);
  assertEquals(routePrompt("a sks, running", none, all, "tiny").adapters.map((x) => x.id), ["x"]);
  assertEquals(routePrompt("a <new1> cat", none, all, "tiny").adapters.map((x) => x.id), ["c"]);
  const r = routePrompt(
    "an sks dog <age>",
    { adapters: [{ id: "x", scale: 0.6 }], sliders: [] },
    all,
    "tiny",
  );
  assertEquals(r.adapters, [{ id: "x", scale: 0.6, routed: false }]);
  assertEquals(r.sliders, [{ id: "s", scale: 1, routed: true }]);
  assertEquals(r.prompt, "an sks dog");
});

Deno.test("prompt routing: other base models are not routed; a shared token is ambiguous", () => {
  const all = [a("x", "rex", "sks", { base_model: "sd15" }), a("y", "fido", "zwx"), a("z", "odie", "zwx")];
  assertEquals(routePrompt("a <unknown> thing", none, all, "tiny").prompt, "a <unknown> thing");
  const e = assertThrows(() => routePrompt("a <rex>", none, all, "tiny"), ApiProblem);
  assertEquals(e.status, 422);
  assertEquals(routePrompt("a sks", none, all, "tiny").adapters, []);
  assertThrows(() => routePrompt("a zwx dog", none, all, "tiny"), ApiProblem, "Ambiguous");
  assertEquals(routePrompt("<fido> is a zwx dog", none, all, "tiny").adapters.map((x) => x.id), ["y"]);
});

Deno.test("prompt routing: several tokens per adapter; a merge brings its tokens and is never pulled by them", () => {
  const star = a("star", "star", "<new1>"), heart = a("heart", "heart", "<new2>");
  const joint = a("joint", "pair", "<new3>", { tokens: ["<new3>", "<new4>"] });
  const merged = a("m", "both", "<new1>", { tokens: ["<new1>", "<new2>"], source: { kind: "merge" } });
  const all = [star, heart, joint, merged];
  // Bare tokens pull the adapters that trained them (the merge is not a candidate, so no ambiguity).
  assertEquals(routePrompt("a <new1> star", none, all, "tiny").adapters.map((x) => x.id), ["star"]);
  assertEquals(routePrompt("a <new4> ring", none, all, "tiny").adapters.map((x) => x.id), ["joint"]);
  // The merge listed by id (or by name) brings both tokens: nothing else is pulled.
  const explicit = { adapters: [{ id: "m", scale: 1 }], sliders: [] };
  assertEquals(routePrompt("a <new1> star and a <new2> heart", explicit, all, "tiny").adapters, [
    { id: "m", scale: 1, routed: false },
  ]);
  assertEquals(
    routePrompt("<both>: a <new1> star and a <new2> heart", none, all, "tiny").adapters.map((x) => x.id),
    ["m"],
  );
  // Without the merge, each token pulls its own adapter.
  assertEquals(
    routePrompt("a <new1> star and a <new2> heart", none, all, "tiny").adapters.map((x) => x.id).sort(),
    ["heart", "star"],
  );
});
