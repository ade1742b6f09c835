/**
 * Prompt routing: a prompt that names an adapter pulls it in. `<name>` names an adapter by its name (the
 * newest of that name wins) and is replaced by the adapter's trigger phrase (`sks dog`, `<new1> cat`) for the
 * worker; a trained token written bare (`sks`, `<new1>`) pulls in the one adapter that trained it, and is
 * refused as ambiguous when several did. A token that an adapter already in the request brings (e.g. a merge
 * of `<new1>` and `<new2>`, listed by id) pulls nothing more; merges themselves are reached by `<name>` or id,
 * never by a bare token (their tokens belong to the adapters they merged). Only the tenant's adapters for the
 * request's base model take part.
 *
 * @example
 * ```ts
 * const r = routePrompt("a photo of <rex> on a beach", [], adapters, "tiny-shapes");
 * r.prompt; // "a photo of sks dog on a beach"
 * r.adapters; // [{ id: "adp_1", scale: 1, routed: true }]
 * ```
 */
import { ApiProblem } from "./problem.ts";

export interface RoutableAdapter {
  id: string;
  name: string;
  kind: "concept" | "slider" | "library";
  base_model: string;
  token: string | null;
  /** All tokens it brings (default: `token`). */
  tokens?: string[];
  class_word: string | null;
  created_at: string;
  source?: { kind: string };
}

const tokensOf = (a: RoutableAdapter) => a.tokens ?? (a.token ? [a.token] : []);

export interface RoutedPrompt {
  prompt: string;
  adapters: { id: string; scale: number; routed: boolean }[];
  sliders: { id: string; scale: number; start_step?: number; routed: boolean }[];
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** The words a `<name>` reference becomes for the worker's tokenizer. */
export function triggerPhrase(a: RoutableAdapter): string {
  return [a.token, a.class_word].filter(Boolean).join(" ");
}

export function routePrompt(
  prompt: string,
  explicit: {
    adapters: { id: string; scale: number }[];
    sliders: { id: string; scale: number; start_step?: number }[];
  },
  candidates: RoutableAdapter[],
  baseModel: string,
): RoutedPrompt {
  const own = candidates.filter((a) => a.base_model === baseModel)
    .sort((a, b) => (a.created_at < b.created_at ? 1 : -1)); // newest first
  const adapters = explicit.adapters.map((a) => ({ ...a, routed: false }));
  const sliders = explicit.sliders.map((s) => ({ ...s, routed: false }));
  const chosen = new Set([...adapters.map((a) => a.id), ...sliders.map((s) => s.id)]);
  const pull = (a: RoutableAdapter) => {
    if (chosen.has(a.id)) return;
    chosen.add(a.id);
    if (a.kind === "slider") sliders.push({ id: a.id, scale: 1, routed: true });
    else adapters.push({ id: a.id, scale: 1, routed: true });
  };

  const out = prompt.replace(/<([A-Za-z0-9][A-Za-z0-9_.-]{0,63})>/g, (whole, name: string) => {
    const a = own.find((x) => x.name === name);
    if (!a) {
      const elsewhere = candidates.find((x) => x.name === name);
      if (elsewhere) {
        throw new ApiProblem(
          422,
          "adapter-base-model",
          "Adapter for another base model",
          `<${name}> is an adapter for ${elsewhere.base_model}, not ${baseModel}`,
          {
            invalid_fields: [{
              name: "input.prompt",
              reason: `<${name}> is for base model ${elsewhere.base_model}`,
            }],
          },
        );
      }
      return whole; // a literal token such as <new1>; handled below
    }
    pull(a);
    return a.kind === "slider" ? "" : triggerPhrase(a) || whole;
  }).replace(/ {2,}/g, " ").trim();

  const byToken = new Map<string, RoutableAdapter[]>();
  for (const a of own) {
    if (a.kind === "slider" || a.source?.kind === "merge") continue;
    for (const t of tokensOf(a)) byToken.set(t, [...(byToken.get(t) ?? []), a]);
  }
  const covered = new Set(own.filter((a) => chosen.has(a.id)).flatMap(tokensOf));
  for (const [token, owners] of byToken) {
    const re = new RegExp(`(^|[^A-Za-z0-9_<])${escape(token)}(?![A-Za-z0-9_>])`);
    if (!re.test(out)) continue;
    if (covered.has(token)) continue; // an adapter in the request already brings it
    if (owners.some((a) => chosen.has(a.id))) continue; // already pulled in by <name> or by id
    if (owners.length > 1) {
      throw new ApiProblem(
        422,
        "ambiguous-token",
        "Ambiguous token",
        `"${token}" is the token of ${owners.length} adapters (${
          owners.map((a) => `<${a.name}>`).join(", ")
        }); write <name> or list the adapter in input.adapters`,
        {
          invalid_fields: [{ name: "input.prompt", reason: `"${token}" is ambiguous` }],
        },
      );
    }
    pull(owners[0]);
    for (const t of tokensOf(owners[0])) covered.add(t);
  }
  return { prompt: out, adapters, sliders };
}
