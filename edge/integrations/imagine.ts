/**
 * `/imagine`, the command both chat platforms run: its options (checked before the platform is answered, so
 * that a bad option is told at once), the native prediction they make for the linked tenant
 * (`acceptPrediction`: the same checks, price, credits and idempotency as `POST /v1/predictions`), and the
 * outcome once it ends: the images, or what went wrong in words a chat user can act on.
 *
 * @example
 * ```ts
 * const o = imagineOptions({ prompt: "a red circle", slider: "sld_abc:2", steps: 4 }); // or CommandError
 * const outcome = await imagine(c, o); // c carries the linked tenant
 * if (outcome.ok) outcome.images[0].bytes; // PNG
 * ```
 */
import { BrokerBusyError, type JobRecord } from "../../shared/job_broker.ts";
import { isTerminal } from "../../shared/job_lifecycle.ts";
import { MAX_CHAT_PROMPT, MAX_CHAT_STEPS } from "../../shared/integrations.ts";
import { CreatePredictionRequest } from "../../shared/prediction.ts";
import { validate } from "../body.ts";
import type { EdgeContext } from "../context.ts";
import { unknownRef, waitForJob } from "../jobs.ts";
import { availableModels } from "../models.ts";
import { ApiProblem } from "../problem.ts";
import type { AdapterRecord, FileRecord } from "../records.ts";
import { acceptPrediction } from "../routes/predictions.ts";

/** A command the user must fix (a missing prompt, a malformed option); told at once, nothing is charged. */
export class CommandError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CommandError";
  }
}

export interface ImagineOptions {
  prompt: string;
  /** An adapter of the linked tenant, by id or name (a slider goes in as a slider at scale 1). */
  adapter?: string;
  slider?: { id: string; scale: number };
  steps?: number;
  seed?: number;
  model?: string;
}

export const OPTION_NAMES = ["prompt", "adapter", "slider", "steps", "seed", "model"] as const;

/** `id:scale` (scale -10..10). */
export function parseSlider(raw: string): { id: string; scale: number } {
  const m = /^([^:\s]+):(-?\d+(?:\.\d+)?)$/.exec(raw.trim());
  const scale = Number(m?.[2]);
  if (!m || Math.abs(scale) > 10) {
    throw new CommandError(
      `slider: expected id:scale with a scale from -10 to 10 (e.g. sld_abc:2.5), got "${raw}"`,
    );
  }
  return { id: m[1], scale };
}

function wholeNumber(name: string, v: unknown, min: number, max: number): number {
  const n = typeof v === "string" && /^-?\d+$/.test(v) ? Number(v) : v;
  if (typeof n !== "number" || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new CommandError(`${name}: expected a whole number from ${min} to ${max}, got "${String(v)}"`);
  }
  return n;
}

/** The command's options from the platform's raw values; a CommandError saying what is wrong. */
export function imagineOptions(raw: Partial<Record<(typeof OPTION_NAMES)[number], unknown>>): ImagineOptions {
  const text = (name: string, v: unknown) => {
    if (typeof v !== "string") throw new CommandError(`${name}: expected text, got ${typeof v}`);
    return v.trim();
  };
  const prompt = raw.prompt === undefined ? "" : text("prompt", raw.prompt);
  if (!prompt) throw new CommandError("prompt: the command needs a prompt (what to draw)");
  if (prompt.length > MAX_CHAT_PROMPT) {
    throw new CommandError(`prompt: at most ${MAX_CHAT_PROMPT} characters, got ${prompt.length}`);
  }
  const o: ImagineOptions = { prompt };
  if (raw.adapter !== undefined) o.adapter = text("adapter", raw.adapter);
  if (raw.slider !== undefined) o.slider = parseSlider(text("slider", raw.slider));
  if (raw.steps !== undefined) o.steps = wholeNumber("steps", raw.steps, 1, MAX_CHAT_STEPS);
  if (raw.seed !== undefined) o.seed = wholeNumber("seed", raw.seed, 0, 2 ** 53 - 1);
  if (raw.model !== undefined) o.model = text("model", raw.model);
  return o;
}

/** The tenant's adapter by id, or its newest by name. */
function findAdapter(owned: AdapterRecord[], ref: string): AdapterRecord | undefined {
  return owned.find((a) => a.id === ref) ??
    owned.filter((a) => a.name === ref).sort((x, y) => (x.created_at < y.created_at ? 1 : -1))[0];
}

/**
 * The native prediction request for the options: the base model is `model`, else the adapter's or
 * slider's, else the only one served.
 */
export async function predictionRequest(
  c: EdgeContext,
  o: ImagineOptions,
): Promise<CreatePredictionRequest> {
  const edge = c.get("edge");
  const owned = (await edge.metadata.list<AdapterRecord>(["adapters", c.get("tenant").id], { limit: 1000 }))
    .items.map((i) => i.value);
  const lookup = (field: string, ref: string) => {
    const a = findAdapter(owned, ref);
    if (!a) {
      throw unknownRef(field, `no adapter "${ref}" in the linked account (GET /v1/adapters lists them)`);
    }
    return a;
  };
  const adapter = o.adapter ? lookup("adapter", o.adapter) : null;
  const slider = o.slider ? lookup("slider", o.slider.id) : null;
  if (slider && slider.kind !== "slider") {
    throw unknownRef("slider", `"${o.slider!.id}" is a ${slider.kind} adapter, not a slider (use adapter)`);
  }
  let baseModel = o.model ?? adapter?.base_model ?? slider?.base_model;
  if (!baseModel) {
    const models = (await availableModels(edge)).map((m) => m.id);
    if (models.length !== 1) {
      throw new CommandError(`model: name a base model (one of: ${models.join(", ") || "none"})`);
    }
    baseModel = models[0];
  }
  const sliders = [
    ...(adapter?.kind === "slider" ? [{ id: adapter.id, scale: 1 }] : []),
    ...(slider ? [{ id: slider.id, scale: o.slider!.scale }] : []),
  ];
  return validate(CreatePredictionRequest, {
    base_model: baseModel,
    input: {
      prompt: o.prompt,
      ...(o.steps !== undefined ? { steps: o.steps } : {}),
      ...(o.seed !== undefined ? { seed: o.seed } : {}),
      adapters: adapter && adapter.kind !== "slider" ? [{ id: adapter.id, scale: 1 }] : [],
      sliders,
    },
  });
}

export type ImagineOutcome =
  | { ok: true; job: JobRecord; images: { id: string; bytes: Uint8Array }[] }
  | { ok: false; reason: string; job: JobRecord | null };

/** Runs the prediction for the tenant `c` carries and waits for it (up to `integrations.waitMs`). */
export async function imagine(c: EdgeContext, o: ImagineOptions): Promise<ImagineOutcome> {
  const edge = c.get("edge");
  let job: JobRecord | null = null;
  try {
    job = await acceptPrediction(c, await predictionRequest(c, o));
    const final = await waitForJob(edge, job, edge.integrations.waitMs);
    if (!isTerminal(final.state)) {
      return {
        ok: false,
        job: final,
        reason:
          `prediction ${job.id} is still running after ${
            Math.round(edge.integrations.waitMs / 60_000)
          } min; ` +
          `GET /v1/predictions/${job.id} will have its result`,
      };
    }
    if (final.state !== "succeeded") {
      const why = final.state === "canceled" ? "it was canceled" : final.error ?? final.state;
      return {
        ok: false,
        job: final,
        reason: `prediction ${job.id} failed: ${why} (its credits were refunded)`,
      };
    }
    const tenant = c.get("tenant").id;
    const images = [];
    for (const id of (final.result?.files ?? []) as string[]) {
      const rec = await edge.metadata.get<FileRecord>(["files", tenant, id]);
      const bytes = rec ? await edge.blobs.get(rec.sha256) : null;
      if (!bytes) {
        return { ok: false, job: final, reason: `prediction ${job.id}: its output ${id} is missing` };
      }
      images.push({ id, bytes });
    }
    return { ok: true, job: final, images };
  } catch (e) {
    if (e instanceof CommandError) return { ok: false, job, reason: e.message };
    if (e instanceof ApiProblem) return { ok: false, job, reason: `${e.title}: ${e.detail}` };
    if (e instanceof BrokerBusyError) {
      return {
        ok: false,
        job,
        reason: `the server is busy; nothing was charged, retry in ${e.retryAfterS} s`,
      };
    }
    console.error("imagine:", e);
    const reason = job
      ? `the server failed while waiting for prediction ${job.id} (it was logged); GET /v1/predictions/${job.id}`
      : "the server failed (it was logged); nothing was charged";
    return { ok: false, job, reason };
  }
}

/**
 * Options from a slash command's text, `<prompt> [--adapter ID] [--slider id:scale] [--steps N] [--seed N]
 * [--model M]` (`--name=value` too); Slack's `&amp;`, `&lt;`, `&gt;` are read back as `&`, `<`, `>`.
 */
export function imagineOptionsFromText(text: string): ImagineOptions {
  const words = text.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&").trim().split(/\s+/);
  const raw: Record<string, unknown> = {};
  const prompt: string[] = [];
  for (let i = 0; i < words.length; i++) {
    const m = /^--([a-z]+)(?:=(.*))?$/.exec(words[i]);
    if (!m) {
      if (words[i]) prompt.push(words[i]);
      continue;
    }
    const name = m[1];
    if (name === "prompt" || !(OPTION_NAMES as readonly string[]).includes(name)) {
      throw new CommandError(
        `unknown option --${name} (expected ${OPTION_NAMES.slice(1).map((n) => `--${n}`).join(", ")})`,
      );
    }
    const value = m[2] ?? words[++i];
    if (value === undefined || value === "") throw new CommandError(`--${name} needs a value`);
    raw[name] = value;
  }
  return imagineOptions({ ...raw, prompt: prompt.join(" ") });
}
