/**
 * The chat-bot integrations against the real server (embedded edge, an in-process worker, the tiny model):
 * Discord interactions signed with a keypair made here, Slack commands signed with a test signing secret,
 * and a fake Discord/Slack API on loopback that records the follow-ups. PING/PONG, `/imagine` deferred at
 * once and followed up with a PNG, the Slack `response_url` post with an image URL anyone can fetch, the
 * linked tenant paying one prediction's price; refusals: mis-signed, replayed (an old timestamp, or the same
 * signed request again: run and charged once), unlinked places, a `response_url` on another host, a missing
 * prompt, an unknown adapter, a tenant without credits.
 */
import { assert, assertEquals } from "../gpu-worker/testing.ts";
import { decodePng } from "../gpu-worker/image/png.ts";
import { slackSignature } from "../edge/integrations/slack_signature.ts";
import { toHex } from "../edge/integrations/request_signature.ts";
import { startE2E } from "./e2e_server.ts";

const APP_ID = "100200300400500600";
const SLACK_SECRET = "test-signing-secret-0123456789abcdef";
const STEPS = 3;
const enc = (s: string) => new TextEncoder().encode(s);
const now = () => String(Math.floor(Date.now() / 1000));
const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

interface Recorded {
  path: string;
  contentType: string;
  json?: Record<string, unknown>;
  payload?: Record<string, unknown>;
  files: { field: string; name: string; bytes: Uint8Array }[];
}

/** Discord's webhooks and Slack's response_urls on one loopback server, recording what arrives. */
function fakePlatforms() {
  const seen: Recorded[] = [];
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, async (req) => {
    const rec: Recorded = {
      path: new URL(req.url).pathname,
      contentType: req.headers.get("content-type") ?? "",
      files: [],
    };
    if (rec.contentType.startsWith("multipart/form-data")) {
      const form = await req.formData();
      rec.payload = JSON.parse(String(form.get("payload_json")));
      for (const [field, v] of form.entries()) {
        if (v instanceof File) {
          rec.files.push({ field, name: v.name, bytes: new Uint8Array(await v.arrayBuffer()) });
        }
      }
    } else rec.json = await req.json();
    seen.push(rec);
    return new Response(null, { status: 204 });
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    seen,
    /** The first recorded request to `path`, waiting up to `ms` for it. */
    async next(path: string, ms = 60_000): Promise<Recorded> {
      const end = Date.now() + ms;
      for (;;) {
        const hit = seen.find((r) => r.path === path);
        if (hit) return hit;
        if (Date.now() > end) {
          throw new Error(`nothing posted to ${path} in ${ms} ms; got ${seen.map((r) => r.path)}`);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    stop: () => server.shutdown(),
  };
}

async function discordKeypair() {
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, true, [
    "sign",
    "verify",
  ]) as CryptoKeyPair;
  const publicKey = toHex(new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey)));
  return {
    publicKey,
    sign: async (message: string) =>
      toHex(new Uint8Array(await crypto.subtle.sign("Ed25519", pair.privateKey, enc(message)))),
  };
}

const isPng = (b: Uint8Array) => PNG_SIGNATURE.every((x, i) => b[i] === x);

Deno.test({
  name: "integrations: Discord and Slack /imagine against the real server, with a fake platform API",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async (t) => {
    const fake = fakePlatforms();
    const key = await discordKeypair();
    const e = await startE2E({
      integrations: {
        discord: { publicKey: key.publicKey, applicationId: APP_ID },
        slack: { signingSecret: SLACK_SECRET },
        discordApiBase: `${fake.url}/api/v10`,
        slackHooksBase: fake.url,
        allowPrivate: true,
      },
    });
    const balance = async (k = e.keyA) =>
      (await (await e.api("/v1/account", {}, k)).json()).balance as number;
    const link = (platform: string, external_id: string, k = e.keyA) =>
      e.json("/v1/integrations/links", { platform, external_id }, k);

    let seq = 0;
    /** POSTs a signed interaction; `sign` may tamper with what is signed. */
    const discord = async (
      body: Record<string, unknown>,
      o: { timestamp?: string; signature?: string | null } = {},
    ) => {
      const raw = JSON.stringify(body), ts = o.timestamp ?? now();
      const headers: Record<string, string> = {
        "content-type": "application/json",
        "x-signature-timestamp": ts,
      };
      const signature = o.signature === undefined ? await key.sign(ts + raw) : o.signature;
      if (signature !== null) headers["x-signature-ed25519"] = signature;
      return fetch(`${e.url}/v1/integrations/discord/interactions`, { method: "POST", headers, body: raw });
    };
    const command = (
      options: { name: string; type: number; value: unknown }[],
      place: Record<string, unknown>,
    ) => {
      const id = `9000${++seq}`;
      return {
        id,
        token: `itok_${id}`,
        body: {
          id,
          application_id: APP_ID,
          type: 2,
          token: `itok_${id}`,
          version: 1,
          channel_id: "555",
          data: { id: "777", name: "imagine", type: 1, options },
          ...place,
        },
      };
    };
    /** Asks for a link with the key and confirms it from the place, as its admin would; the active link. */
    const linked = async (platform: "discord" | "slack", place: string, k = e.keyA, dm = false) => {
      const res = await link(platform, place, k);
      assertEquals(res.status, 202);
      const pending = await res.json();
      const text = platform === "discord"
        ? (await (await discord(linkCommand(pending.code, dm ? { user: { id: place } } : admin(place))))
          .json())
          .data.content
        : (await (await slack(slashCommand(`link ${pending.code}`, place))).json()).text;
      assert(String(text).startsWith("Linked:"), text);
      return pending;
    };
    const followUpPath = (token: string) => `/api/v10/webhooks/${APP_ID}/${token}`;
    const inGuild = (guild: string) => ({ guild_id: guild, member: { user: { id: "42" } } });
    /** A member with Manage Server (permission bit 5). */
    const admin = (guild: string) => ({ guild_id: guild, member: { user: { id: "43" }, permissions: "32" } });
    const linkCommand = (code: string, place: Record<string, unknown>) => {
      const id = `9100${++seq}`;
      return {
        id,
        application_id: APP_ID,
        type: 2,
        token: `itok_${id}`,
        version: 1,
        data: { id: "778", name: "link", type: 1, options: [{ name: "code", type: 3, value: code }] },
        ...place,
      };
    };

    const slack = async (fields: Record<string, string>, o: { timestamp?: string; secret?: string } = {}) => {
      const raw = new URLSearchParams(fields).toString(), ts = o.timestamp ?? now();
      return fetch(`${e.url}/v1/integrations/slack/commands`, {
        method: "POST",
        headers: {
          "content-type": "application/x-www-form-urlencoded",
          "x-slack-request-timestamp": ts,
          "x-slack-signature": await slackSignature(o.secret ?? SLACK_SECRET, ts, enc(raw)),
        },
        body: raw,
      });
    };
    const slashCommand = (
      text: string,
      team = "T0SLACK1",
      responsePath = `/commands/${team}/${++seq}/secret`,
    ) => ({
      command: "/imagine",
      text,
      team_id: team,
      user_id: "U1",
      channel_id: "C1",
      trigger_id: `trig.${seq}`,
      response_url: `${fake.url}${responsePath}`,
    });

    try {
      await t.step(
        "links: asked with the key, pending until the place sends the code back; then 200, 404, 409",
        async () => {
          const res = await link("discord", "G1");
          assertEquals(res.status, 202);
          const l = await res.json();
          assert(
            l.id.startsWith("lnk_") && l.platform === "discord" && l.external_id === "G1" &&
              l.status === "pending" && l.confirm_with.includes(`/link code:${l.code}`),
            JSON.stringify(l),
          );
          assertEquals([l.tenant, l.code_key], [undefined, undefined]);
          const answer = async (code: string, place: Record<string, unknown>) =>
            (await (await discord(linkCommand(code, place))).json()).data.content as string;
          // A pending link pays for nothing: /imagine in G1 is still refused.
          const early = command([{ name: "prompt", type: 3, value: "x" }], inGuild("G1"));
          assert((await (await discord(early.body)).json()).data.content.includes("not linked"));
          // A member without Manage Server, a wrong code, or the code in another server: not linked.
          assert((await answer(l.code, inGuild("G1"))).includes("takes a member with Manage Server"));
          assert((await answer("WRONGCODE2", admin("G1"))).includes("not known"));
          assert((await answer(l.code, admin("G2"))).includes("another place"));
          assert((await answer(l.code, admin("G1"))).startsWith("Linked: commands here now use the account"));
          const again = await link("discord", "G1");
          assertEquals([again.status, (await again.json()).status], [200, "active"]);
          const taken = await link("discord", "G1", e.keyB);
          assertEquals(taken.status, 409);
          assert((await taken.json()).detail.includes("linked to another account"));
          const list = await (await e.api("/v1/integrations/links")).json();
          assertEquals(list.data.map((x: { id: string; status: string }) => [x.id, x.status]), [[
            l.id,
            "active",
          ]]);
          assertEquals((await (await e.api("/v1/integrations/links", {}, e.keyB)).json()).data, []);
          const del = await e.api(`/v1/integrations/links/${l.id}`, { method: "DELETE" }, e.keyB);
          assertEquals(del.status, 404);
          const bad = await link("teams", "G1");
          assertEquals(bad.status, 422);
          assertEquals((await e.api("/v1/integrations/links", {}, null)).status, 401);
          await linked("slack", "T0SLACK1");
        },
      );

      await t.step("discord: PING is answered with PONG; bad and old signatures are 401", async () => {
        const ping = { id: "1", application_id: APP_ID, type: 1, token: "ping", version: 1 };
        const res = await discord(ping);
        assertEquals(res.status, 200);
        assertEquals(await res.json(), { type: 1 });
        const wrong = await discord(ping, { signature: await key.sign("0" + JSON.stringify(ping)) });
        assertEquals(wrong.status, 401);
        assert((await wrong.json()).detail.includes("does not verify"));
        assertEquals((await discord(ping, { signature: null })).status, 401);
        // A replay: a request Discord really signed, 6 minutes ago.
        const old = String(Math.floor(Date.now() / 1000) - 360);
        const replay = await discord(ping, { timestamp: old });
        assertEquals(replay.status, 401);
        assert((await replay.json()).detail.includes("s old"));
        const other = await discord({ ...ping, application_id: "1" });
        assertEquals(other.status, 400);
      });

      await t.step(
        "discord: /imagine defers within 3 s and follows up with the PNG; the tenant pays",
        async () => {
          const before = await balance();
          const c = command([
            { name: "prompt", type: 3, value: "a red circle, white background" },
            { name: "steps", type: 4, value: STEPS },
            { name: "seed", type: 4, value: 7 },
          ], inGuild("G1"));
          const ts = now();
          const t0 = performance.now();
          const res = await discord(c.body, { timestamp: ts });
          const ms = performance.now() - t0;
          assertEquals([res.status, await res.json()], [200, { type: 5 }]);
          assert(ms < 3000, `deferred after ${ms.toFixed(0)} ms`);
          const up = await fake.next(followUpPath(c.token));
          assert(up.contentType.startsWith("multipart/form-data"), up.contentType);
          assertEquals(up.files.length, 1);
          assertEquals(up.files[0].field, "files[0]");
          assert(isPng(up.files[0].bytes), "a PNG");
          const img = decodePng(up.files[0].bytes);
          assertEquals([img.width, img.height], [64, 64]);
          const payload = up.payload as {
            content: string;
            attachments: { id: number }[];
            allowed_mentions: unknown;
          };
          assert(payload.content.includes("a red circle"), payload.content);
          assertEquals(payload.attachments.map((a) => a.id), [0]);
          assertEquals(payload.allowed_mentions, { parse: [] });
          assertEquals(await balance(), before - STEPS);
          // Replayed: the very same signed request again is refused, and nothing runs or is charged.
          const posts = () => fake.seen.filter((r) => r.path === followUpPath(c.token)).length;
          const replay = await discord(c.body, { timestamp: ts });
          assertEquals(replay.status, 401);
          const problem = await replay.json();
          assert(
            problem.detail.includes("already received") && problem.detail.includes("a replay"),
            problem.detail,
          );
          await new Promise((r) => setTimeout(r, 500));
          assertEquals([await balance(), posts()], [before - STEPS, 1]);
          // Redelivered as Discord would, signed anew: the same interaction names the same job, charged once.
          const again = await discord(c.body, { timestamp: String(Number(ts) + 1) });
          assertEquals(await again.json(), { type: 5 });
          await new Promise((r) => setTimeout(r, 500));
          assertEquals(await balance(), before - STEPS);
        },
      );

      await t.step("discord: a DM runs for the linked user", async () => {
        await linked("discord", "4242", e.keyA, true);
        const c = command([
          { name: "prompt", type: 3, value: "a blue square" },
          { name: "steps", type: 4, value: 2 },
        ], { user: { id: "4242" } });
        assertEquals(await (await discord(c.body)).json(), { type: 5 });
        const up = await fake.next(followUpPath(c.token));
        assert(isPng(up.files[0].bytes));
      });

      await t.step(
        "discord: unlinked guild, unknown command, missing prompt: ephemeral at once",
        async () => {
          const ephemeral = async (body: Record<string, unknown>) => {
            const res = await discord(body);
            assertEquals(res.status, 200);
            const r = await res.json();
            assertEquals([r.type, r.data.flags], [4, 64]);
            return r.data.content as string;
          };
          const unlinked = await ephemeral(
            command([{ name: "prompt", type: 3, value: "x" }], inGuild("G999")).body,
          );
          assert(unlinked.includes("not linked") && unlinked.includes("G999"), unlinked);
          const other = command([], inGuild("G1"));
          const unknown = await ephemeral({ ...other.body, data: { id: "1", name: "draw", type: 1 } });
          assert(unknown.includes("Unknown command /draw"), unknown);
          const noPrompt = await ephemeral(
            command([{ name: "steps", type: 4, value: 2 }], inGuild("G1")).body,
          );
          assert(noPrompt.includes("needs a prompt"), noPrompt);
          const badSlider = await ephemeral(
            command(
              [{ name: "prompt", type: 3, value: "x" }, { name: "slider", type: 3, value: "big" }],
              inGuild("G1"),
            )
              .body,
          );
          assert(badSlider.includes("id:scale"), badSlider);
        },
      );

      await t.step(
        "discord: an unknown adapter and a tenant without credits: a follow-up says why",
        async () => {
          const before = await balance();
          const c = command([
            { name: "prompt", type: 3, value: "a star" },
            { name: "adapter", type: 3, value: "nope" },
          ], inGuild("G1"));
          assertEquals(await (await discord(c.body)).json(), { type: 5 });
          const up = await fake.next(followUpPath(c.token));
          const content = String(up.json?.content);
          assert(content.includes("Could not imagine") && content.includes('no adapter "nope"'), content);
          assertEquals(await balance(), before);
          const poor = await e.tenant("poor", 0);
          await linked("discord", "GPOOR", poor);
          const p = command([{ name: "prompt", type: 3, value: "a star" }], inGuild("GPOOR"));
          assertEquals(await (await discord(p.body)).json(), { type: 5 });
          const msg = String((await fake.next(followUpPath(p.token))).json?.content);
          assert(msg.includes("Insufficient credits") && msg.includes("balance is 0"), msg);
        },
      );

      await t.step(
        "slack: /imagine is acknowledged, then response_url gets an image URL anyone can fetch",
        async () => {
          const before = await balance();
          const cmd = slashCommand(`a purple star --steps ${STEPS} --seed 2`);
          const t0 = performance.now();
          const res = await slack(cmd);
          assert(performance.now() - t0 < 3000, "acknowledged within 3 s");
          assertEquals(res.status, 200);
          const ack = await res.json();
          assertEquals(ack.response_type, "ephemeral");
          assert(ack.text.includes("a purple star"), ack.text);
          const post = await fake.next(new URL(cmd.response_url).pathname);
          const msg = post.json as { response_type: string; blocks: { type: string; image_url?: string }[] };
          assertEquals(msg.response_type, "in_channel");
          const imageUrl = msg.blocks.find((b) => b.type === "image")?.image_url;
          assert(imageUrl?.startsWith(`${e.url}/v1/integrations/images/`), String(imageUrl));
          const img = await fetch(imageUrl!); // no key: Slack fetches it as is
          assertEquals([img.status, img.headers.get("content-type")], [200, "image/png"]);
          const bytes = new Uint8Array(await img.arrayBuffer());
          assert(isPng(bytes));
          assertEquals(decodePng(bytes).width, 64);
          const tampered = await fetch(imageUrl!.replace(/signature=[0-9a-f]/, "signature=g"));
          assertEquals(tampered.status, 404);
          await tampered.body?.cancel();
          assertEquals(await balance(), before - STEPS);
        },
      );

      await t.step(
        "slack: the same signed command twice: the second is a replay (401); run and charged once",
        async () => {
          const before = await balance();
          // No trigger_id, so no idempotency key: only the replay check keeps the second from running.
          const { trigger_id: _, ...cmd } = slashCommand(`a green triangle --steps ${STEPS} --seed 3`);
          const ts = now();
          const first = await slack(cmd, { timestamp: ts });
          assertEquals(first.status, 200);
          assert((await first.json()).text.includes("a green triangle"));
          const replay = await slack(cmd, { timestamp: ts });
          assertEquals(replay.status, 401);
          const problem = await replay.json();
          assert(
            problem.detail.includes("already received") && problem.detail.includes("a replay"),
            problem.detail,
          );
          const path = new URL(cmd.response_url).pathname;
          await fake.next(path);
          await new Promise((r) => setTimeout(r, 500));
          assertEquals(fake.seen.filter((r) => r.path === path).length, 1, "one response for one command");
          assertEquals(await balance(), before - STEPS);
        },
      );

      await t.step(
        "slack: bad or old signatures 401; response_url elsewhere 400; unlinked, no prompt",
        async () => {
          const posted = fake.seen.length;
          const cmd = slashCommand("a red circle");
          const wrong = await slack(cmd, { secret: "another secret" });
          assertEquals(wrong.status, 401);
          await wrong.body?.cancel();
          const replay = await slack(cmd, { timestamp: String(Math.floor(Date.now() / 1000) - 301) });
          assertEquals(replay.status, 401);
          assert((await replay.json()).detail.includes("replayed"));
          const elsewhere = await slack({
            ...cmd,
            response_url: "https://evil.example/commands/T0SLACK1/1/x",
          });
          assertEquals(elsewhere.status, 400);
          const problem = await elsewhere.json();
          assert(
            problem.detail.includes("response_url") && problem.detail.includes(fake.url),
            problem.detail,
          );
          const unlinked = await (await slack(slashCommand("a red circle", "T0OTHER"))).json();
          assert(
            unlinked.response_type === "ephemeral" && unlinked.text.includes("not linked"),
            unlinked.text,
          );
          const empty = await (await slack(slashCommand("--steps 2"))).json();
          assert(empty.text.includes("needs a prompt") && empty.text.includes("Usage"), empty.text);
          const unknownFlag = await (await slack(slashCommand("a star --size 9"))).json();
          assert(unknownFlag.text.includes("unknown option --size"), unknownFlag.text);
          await new Promise((r) => setTimeout(r, 300));
          assertEquals(fake.seen.length, posted, "nothing was posted for refused commands");
        },
      );

      await t.step("the openapi document lists the integration routes", async () => {
        const doc = await (await e.api("/openapi.json", {}, null)).json();
        for (const p of ["/v1/integrations/discord/interactions", "/v1/integrations/slack/commands"]) {
          assert(doc.paths[p]?.post, p);
        }
        assert(doc.paths["/v1/integrations/links/{id}"]?.delete);
      });
    } finally {
      await e.stop();
      await fake.stop();
    }
  },
});
