/**
 * Deno KV values are capped at 64 KiB; a job's request or a zip's entry list can be larger. These helpers
 * store a JSON value as numbered chunks under a key prefix, inside the caller's atomic operation.
 *
 * @example
 * ```ts
 * const op = kv.atomic();
 * setChunks(op, ["job_spec", "p_1"], { request, work });
 * await op.commit();
 * const spec = await getChunks(kv, ["job_spec", "p_1"]);
 * ```
 */
const CHUNK_BYTES = 60_000;

/** Adds the chunk writes to `op`; returns how many chunks the value took. */
export function setChunks(op: Deno.AtomicOperation, prefix: Deno.KvKey, value: unknown): number {
  const bytes = new TextEncoder().encode(JSON.stringify(value));
  const n = Math.max(1, Math.ceil(bytes.byteLength / CHUNK_BYTES));
  for (let i = 0; i < n; i++) op.set([...prefix, i], bytes.subarray(i * CHUNK_BYTES, (i + 1) * CHUNK_BYTES));
  return n;
}

export async function getChunks<T>(kv: Deno.Kv, prefix: Deno.KvKey): Promise<T | null> {
  const parts: Uint8Array[] = [];
  for await (const e of kv.list<Uint8Array>({ prefix })) parts.push(e.value);
  if (!parts.length) return null;
  const all = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) all.set(p, at), at += p.byteLength;
  return JSON.parse(new TextDecoder().decode(all)) as T;
}

/** Deletes chunks `from..` of a value that used to be longer. */
export function deleteChunks(op: Deno.AtomicOperation, prefix: Deno.KvKey, from: number, to: number): void {
  for (let i = from; i < to; i++) op.delete([...prefix, i]);
}
