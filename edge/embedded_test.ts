import { assert, assertEquals } from "../gpu-worker/testing.ts";
import { rateLimitPerMinuteFrom, startEmbedded } from "./embedded.ts";
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

Deno.test("RATE_LIMIT_PER_MINUTE: a positive whole number, 600 when unset; anything else stops the start", async () => {
  assertEquals(rateLimitPerMinuteFrom(undefined), 600);
  assertEquals(rateLimitPerMinuteFrom(""), 600);
  assertEquals(rateLimitPerMinuteFrom(" 1200 "), 1200);
  for (const bad of ["0", "-5", "1.5", "1e3", "ten", "600/min"]) {
    let threw = false;
    try {
      rateLimitPerMinuteFrom(bad);
    } catch (e) {
      threw = e instanceof RangeError && e.message.includes("RATE_LIMIT_PER_MINUTE");
    }
    assert(threw, `"${bad}" is refused`);
  }
  const dataDir = await Deno.makeTempDir();
  try {
    let threw = false;
    try {
      await startEmbedded({ port: 0, dataDir, modelsDir: MODELS_DIR, log: () => {}, rateLimitPerMinute: 0 });
    } catch (e) {
      threw = e instanceof RangeError;
    }
    assert(threw, "rateLimitPerMinute 0 is refused");
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("edge/main.ts takes the per-key rate limit from RATE_LIMIT_PER_MINUTE", async () => {
  const dataDir = await Deno.makeTempDir();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("./main.ts", import.meta.url).pathname],
    env: { PORT: "0", DATA_DIR: dataDir, MODELS_DIR, EMBEDDED_WORKER: "0", RATE_LIMIT_PER_MINUTE: "2" },
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  try {
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let out = "";
    let port = "";
    while (!port) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`the edge exited before listening: ${out}`);
      out += value;
      port = /listening on http:\/\/localhost:(\d+)/.exec(out)?.[1] ?? "";
    }
    (async () => {
      while (!(await reader.read()).done); // keep draining: the edge never blocks on a full pipe
    })().catch(() => {});
    const key = (await Deno.readTextFile(`${dataDir}/dev-api-key.txt`)).trim();
    const statuses: number[] = [];
    let last: Response | null = null;
    for (let i = 0; i < 3; i++) {
      last = await fetch(`http://127.0.0.1:${port}/v1/account`, {
        headers: { authorization: `Bearer ${key}` },
      });
      statuses.push(last.status);
      await last.body?.cancel();
    }
    assertEquals(statuses, [200, 200, 429]);
    assertEquals(last!.headers.get("ratelimit-policy"), '"default";q=2;w=60');
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await Deno.remove(dataDir, { recursive: true });
  }
});
