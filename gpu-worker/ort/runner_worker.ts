/**
 * The engine thread: owns the ORT sessions and runs them, so that ORT's blocking `run()` never stalls the
 * thread that serves HTTP. Spoken to only through `EngineRunner` (runner.ts).
 */
/// <reference lib="deno.worker" />
import { OrtSession } from "./session.ts";
import { Tensor } from "../tensor.ts";
import type { RunnerRequest, RunnerResponse, WireTensor } from "./runner.ts";

const sessions = new Map<number, OrtSession>();
let nextId = 1;

function reply(msg: RunnerResponse, transfer: Transferable[] = []) {
  self.postMessage(msg, { transfer });
}

self.onmessage = async (ev: MessageEvent<RunnerRequest>) => {
  const req = ev.data;
  try {
    if (req.kind === "create") {
      const s = await OrtSession.create(req.model, req.spec, req.ep, req.options);
      const id = nextId++;
      sessions.set(id, s);
      reply({ id: req.id, ok: true, session: id, outputNames: [...s.outputNames] });
    } else if (req.kind === "run") {
      const s = sessions.get(req.session);
      if (!s) throw new Error(`no session ${req.session} (released?)`);
      const feeds: Record<string, Tensor> = {};
      for (const [k, t] of Object.entries(req.feeds)) feeds[k] = new Tensor(t.dtype, t.dims, t.data);
      const out = await s.run(feeds, req.outputs);
      const wire: Record<string, WireTensor> = {};
      const transfer: Transferable[] = [];
      for (const [k, t] of Object.entries(out)) {
        wire[k] = { dtype: t.dtype, dims: t.dims, data: t.data };
        transfer.push(t.data.buffer as ArrayBuffer);
      }
      reply({ id: req.id, ok: true, outputs: wire }, transfer);
    } else if (req.kind === "release") {
      await sessions.get(req.session)?.release();
      sessions.delete(req.session);
      reply({ id: req.id, ok: true });
    }
  } catch (e) {
    reply({ id: req.id, ok: false, error: (e as Error).message, errorName: (e as Error).name });
  }
};
