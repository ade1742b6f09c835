/**
 * Progress of the command-line tools (`train`, `pretrain`, `eval`, `generate --n`): a bar on stderr (step,
 * loss, rate, ETA) when stdout is a terminal, nothing when it is not (a pipe or a log file gets the results
 * only), and with `--json` one JSON object per line on stdout: `{"type":"progress", ...}` as it goes, then
 * the tool's `{"type":"result", ...}`; in that mode stdout holds nothing else.
 *
 * @example
 * ```ts
 * const p = new Progress("train", progressMode(values.json));
 * p.update({ step: 3, total: 100, loss: 0.12 });
 * p.end();
 * ```
 */

export type ProgressMode = "bar" | "json" | "off";

/** `json` when asked for, else a bar only when stdout is a terminal. */
export function progressMode(json: boolean | undefined, stdout: { isTerminal(): boolean } = Deno.stdout) {
  return json ? "json" : stdout.isTerminal() ? "bar" : "off" as ProgressMode;
}

export interface ProgressUpdate {
  step: number;
  total: number;
  loss?: number;
  /** Steps per second and seconds left, when the caller knows them better (else from the elapsed time). */
  stepsPerSecond?: number;
  etaSeconds?: number;
}

interface Sink {
  writeSync(b: Uint8Array): number;
}

const WIDTH = 24;

export class Progress {
  readonly #started = performance.now();
  readonly #enc = new TextEncoder();
  #drawn = false;

  constructor(
    readonly label: string,
    readonly mode: ProgressMode,
    private readonly sinks: { stdout: Sink; stderr: Sink } = { stdout: Deno.stdout, stderr: Deno.stderr },
  ) {}

  update(u: ProgressUpdate): void {
    if (this.mode === "off") return;
    const elapsed = (performance.now() - this.#started) / 1000;
    const rate = u.stepsPerSecond ?? (elapsed > 0 ? u.step / elapsed : 0);
    const eta = u.etaSeconds ?? (rate > 0 ? (u.total - u.step) / rate : 0);
    if (this.mode === "json") {
      this.#line({
        type: "progress",
        label: this.label,
        step: u.step,
        total: u.total,
        ...(u.loss !== undefined ? { loss: u.loss } : {}),
        steps_per_s: round(rate, 3),
        eta_s: round(eta, 1),
        elapsed_s: round(elapsed, 1),
      });
      return;
    }
    const done = Math.min(WIDTH, Math.round((u.step / Math.max(1, u.total)) * WIDTH));
    const loss = u.loss !== undefined ? ` loss ${u.loss.toFixed(4)}` : "";
    const text =
      `\r${this.label} [${"#".repeat(done)}${".".repeat(WIDTH - done)}] ${u.step}/${u.total}${loss} ` +
      `${rate.toFixed(2)}/s eta ${eta.toFixed(0)}s `;
    this.sinks.stderr.writeSync(this.#enc.encode(text));
    this.#drawn = true;
  }

  /** A line under the bar (a bar is moved aside first); in JSON mode `{"type":"log"}`; off: nothing. */
  log(message: string): void {
    if (this.mode === "json") return this.#line({ type: "log", label: this.label, message });
    if (this.mode === "off") return;
    this.end();
    this.sinks.stderr.writeSync(this.#enc.encode(message + "\n"));
  }

  /** Ends the bar's line. */
  end(): void {
    if (this.#drawn) this.sinks.stderr.writeSync(this.#enc.encode("\n"));
    this.#drawn = false;
  }

  /** The tool's result: a JSON line in JSON mode (returns true), else nothing (the caller prints its text). */
  result(value: Record<string, unknown>): boolean {
    this.end();
    if (this.mode !== "json") return false;
    this.#line({ type: "result", label: this.label, ...value });
    return true;
  }

  #line(o: Record<string, unknown>): void {
    this.sinks.stdout.writeSync(this.#enc.encode(JSON.stringify(o) + "\n"));
  }
}

const round = (x: number, digits: number) => Number(x.toFixed(digits));
