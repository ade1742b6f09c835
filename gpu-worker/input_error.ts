/**
 * Errors that are the job's fault, not the worker's: the same input would fail again on any worker, so the
 * job layer fails the job at once (`retryable: false`, refunded) instead of retrying it. Code that decodes
 * what a request brought (adapter files, weights, checkpoints) or checks what it asks for throws one of these;
 * the job layer catches the base class. The base class is a `RangeError` (a value the caller gave is outside
 * what is accepted), so code that catches RangeErrors still catches these; a plain built-in `RangeError` or
 * `TypeError` is not one of them and may just as well be a bug of ours: retried.
 * ORT-free, so anything (the edge included) can import it.
 *
 * @example
 * ```ts
 * throw new AdapterError(`adapters[0] ("rex") is a LoRA, not a Custom Diffusion adapter`);
 * // in the job layer:
 * if (e instanceof InputError) fail({ retryable: false });
 * ```
 */

/** The base class: the input of a job is wrong (what was expected, what came). */
export class InputError extends RangeError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Weights that cannot be used: not decodable, wrong shapes, or made for another base model. */
export class WeightsError extends InputError {}

/** An adapter file that cannot be used here: unreadable, of the wrong kind, or for another base model. */
export class AdapterError extends WeightsError {}

/** A training checkpoint that cannot be read or does not match the run. */
export class CheckpointError extends InputError {}

/** A method, feature or job kind the job asks for that this worker does not serve. */
export class NotServedError extends InputError {}

/** A field of the job's input that is valid by its schema but cannot be used (e.g. a missing blob). */
export class JobInputError extends InputError {}
