import { assert, assertEquals } from "../gpu-worker/testing.ts";
import { startEmbedded } from "./embedded.ts";
import { MODELS_DIR } from "./testing.ts";

Deno.test("embedded: KV + files under DATA_DIR, a dev key once, the worker hook gets the URL and token", async () => {
  const dataDir = await Deno.makeTempDir();
  const logs: string[] = [];
  let hook: { url: string; token: string; stopped: boolean } | null = null;
  const e = await startEmbedded({
    port: 0,
    hostname: "127.0.0.1",
    dataDir,
    modelsDir: MODELS_DIR,
    log: (m) => logs.push(m),
    startWorker: (url, token) => {
      hook = { url, token, stopped: false };
      return Promise.resolve({ stop: () => Promise.resolve(void (hook!.stopped = true)) });
    },
  });
  try {
    assertEquals(hook!.url, e.url);
    assertEquals(hook!.token, e.workerToken);
    assert(e.devKey?.startsWith("pfd_") && logs.some((l) => l.includes(e.devKey!)));
    assertEquals((await Deno.readTextFile(e.devKeyFile)).trim(), e.devKey);
    const account =
      await (await fetch(`${e.url}/v1/account`, { headers: { authorization: `Bearer ${e.devKey}` } })).json();
    assertEquals(account.tenant.name, "dev");
    const reg = await fetch(`${e.url}/internal/workers/register`, {
      method: "POST",
      headers: { authorization: `Bearer ${e.workerToken}`, "content-type": "application/json" },
      body: JSON.stringify({
        name: "w",
        models: ["tiny-shapes"],
        kinds: ["prediction"],
        executionProvider: "cpu",
      }),
    });
    assertEquals(reg.status, 200);
    await reg.body?.cancel();
  } finally {
    await e.stop();
  }
  assert(hook!.stopped);
  const again = await startEmbedded({
    port: 0,
    hostname: "127.0.0.1",
    dataDir,
    modelsDir: MODELS_DIR,
    log: (m) => logs.push(m),
  });
  try {
    assertEquals(again.devKey, null, "no new key on a later start");
    assert(logs.at(-1)!.includes(again.devKeyFile));
  } finally {
    await again.stop();
  }

  // The keys CLI writes to the same store.
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("../scripts/keys.ts", import.meta.url).pathname,
      "create",
      "--tenant",
      "acme",
      "--credits",
      "250",
    ],
    env: { DATA_DIR: dataDir },
    stdout: "piped",
    stderr: "piped",
  }).output();
  assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
  const key = new TextDecoder().decode(out.stdout).trim();
  assert(/^pfd_[0-9A-Za-z]{32}_[0-9A-Za-z]{6}$/.test(key), key);
  const third = await startEmbedded({
    port: 0,
    hostname: "127.0.0.1",
    dataDir,
    modelsDir: MODELS_DIR,
    log: () => {},
  });
  try {
    const acme =
      await (await fetch(`${third.url}/v1/account`, { headers: { authorization: `Bearer ${key}` } })).json();
    assertEquals([acme.tenant.name, acme.balance], ["acme", 250]);
  } finally {
    await third.stop();
    await Deno.remove(dataDir, { recursive: true });
  }
});
