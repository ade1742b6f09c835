/**
 * Where a model's parameters come from while its graph is built: diffusers/transformers safetensors files,
 * seeded random init (a config alone builds the same graph), or shapes only (structural checks of SD 1.5
 * without allocating its 3.4 GB). Every parameter is requested by its full diffusers name and shape, so a
 * file with a wrong or missing tensor fails with the file and tensor named.
 *
 * @example
 * ```ts
 * const src = WeightSource.random(0);
 * src.get("conv_in.weight", [32, 4, 3, 3], "fan_in"); // Float32Array(1152)
 * ```
 */
import { numel, type SafetensorsFile } from "./safetensors.ts";
import { Rng } from "../random.ts";

/** How a parameter is initialized when no file provides it. */
export type Init = "fan_in" | "zeros" | "ones" | "embedding";

/** Older checkpoints name some tensors differently; each entry: our name suffix -> alternatives. */
const ALIASES: [string, string][] = [
  [".to_q.", ".query."],
  [".to_k.", ".key."],
  [".to_v.", ".value."],
  [".to_out.0.", ".proj_attn."],
];

export class WeightError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "WeightError";
  }
}

export class WeightSource {
  /** Every parameter requested so far, with its shape (in request order). */
  readonly requested = new Map<string, number[]>();
  /** Random init only: every tensor made, to save as a checkpoint. */
  readonly produced = new Map<string, { shape: number[]; data: Float32Array }>();
  private rng?: Rng;

  private constructor(
    readonly kind: "files" | "random" | "spec",
    private readonly files: SafetensorsFile[] = [],
    seed = 0,
    /** Prefix of every name in the files (e.g. "text_model." is implied by callers, not here). */
    readonly prefix = "",
  ) {
    if (kind === "random") this.rng = new Rng(seed);
  }

  static fromFiles(files: SafetensorsFile[], prefix = ""): WeightSource {
    return new WeightSource("files", files, 0, prefix);
  }

  static random(seed: number): WeightSource {
    return new WeightSource("random", [], seed);
  }

  /** Records shapes only; `get` returns an empty array. */
  static spec(): WeightSource {
    return new WeightSource("spec");
  }

  /** Total number of parameters requested. */
  parameterCount(): number {
    let n = 0;
    for (const s of this.requested.values()) n += numel(s);
    return n;
  }

  /** Returns the tensor `name` with exactly `shape` (float32), or initializes it. */
  get(name: string, shape: number[], init: Init): Float32Array {
    const full = this.prefix + name;
    if (this.requested.has(full)) throw new WeightError(`parameter "${full}" requested twice while building`);
    this.requested.set(full, shape);
    if (this.kind === "spec") return new Float32Array(0);
    if (this.kind === "random") {
      const data = initialize(this.rng!, shape, init);
      this.produced.set(full, { shape, data });
      return data;
    }
    const [file, stored] = this.locate(full);
    if (!file) {
      const where = this.files.map((f) => f.source).join(", ");
      throw new WeightError(`missing tensor "${full}" (expected shape [${shape.join(", ")}]) in ${where}`);
    }
    const e = file.entry(stored);
    if (
      numel(e.shape) !== numel(shape) ||
      (e.shape.length === shape.length && e.shape.some((d, i) => d !== shape[i]))
    ) {
      // Old attention weights are stored as 1x1 convs ([C, C, 1, 1]); same numbers, other shape, so they pass.
      throw new WeightError(
        `${file.source}: tensor "${stored}" has shape [${e.shape.join(", ")}], expected [${
          shape.join(", ")
        }]`,
      );
    }
    return file.float32(stored);
  }

  private locate(name: string): [SafetensorsFile | undefined, string] {
    for (const f of this.files) if (f.has(name)) return [f, name];
    for (const [ours, theirs] of ALIASES) {
      if (!name.includes(ours)) continue;
      const alt = name.replace(ours, theirs);
      for (const f of this.files) if (f.has(alt)) return [f, alt];
    }
    return [undefined, name];
  }

  /** Names present in the files that the model never asked for (a sign of a config/weights mismatch). */
  unused(): string[] {
    const used = new Set(this.requested.keys());
    const out: string[] = [];
    for (const f of this.files) {
      for (const n of f.names()) {
        if (!n.startsWith(this.prefix) || used.has(n)) continue;
        const aliasUsed = ALIASES.some(([ours, theirs]) =>
          n.includes(theirs) && used.has(n.replace(theirs, ours))
        );
        if (!aliasUsed) out.push(n);
      }
    }
    return out;
  }
}

/** PyTorch-like init: uniform(+-1/sqrt(fan_in)) for weights and biases, N(0, 0.02) for embeddings. */
function initialize(rng: Rng, shape: number[], init: Init): Float32Array {
  const n = numel(shape);
  const out = new Float32Array(n);
  switch (init) {
    case "zeros":
      return out;
    case "ones":
      return out.fill(1);
    case "embedding":
      for (let i = 0; i < n; i++) out[i] = rng.gauss() * 0.02;
      return out;
    case "fan_in": {
      const fanIn = shape.length > 1 ? numel(shape.slice(1)) : shape[0];
      const bound = 1 / Math.sqrt(fanIn);
      for (let i = 0; i < n; i++) out[i] = (rng.uniform() * 2 - 1) * bound;
      return out;
    }
  }
}
