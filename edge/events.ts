/**
 * Job events inside one edge process: what `GET <job>/stream` relays (status, progress, preview, output,
 * log, error, done). Workers report through the edge, so every event of a job passes here; a stream opened
 * late starts from the job's stored state (status, last progress, output) and follows from there. Several
 * edges behind a balancer would relay through their shared store instead (KV watch, a Durable Object).
 *
 * @example
 * ```ts
 * const events = new JobEvents();
 * const off = events.subscribe("p_1", (e) => console.log(e.event, e.data));
 * events.publish("p_1", { event: "progress", data: { step: 1, total: 20 } });
 * off();
 * ```
 */
import type { StreamEvent } from "../shared/jobs.ts";

export interface JobEvent {
  event: StreamEvent;
  data: unknown;
}

type Listener = (e: JobEvent) => void;

export class JobEvents {
  readonly #listeners = new Map<string, Set<Listener>>();

  publish(jobId: string, e: JobEvent): void {
    for (const l of this.#listeners.get(jobId) ?? []) l(e);
  }

  subscribe(jobId: string, listener: Listener): () => void {
    const set = this.#listeners.get(jobId) ?? new Set();
    set.add(listener);
    this.#listeners.set(jobId, set);
    return () => {
      set.delete(listener);
      if (!set.size) this.#listeners.delete(jobId);
    };
  }
}
