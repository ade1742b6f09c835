import { assert, assertEquals } from "../../gpu-worker/testing.ts";
import { toHex } from "../integrations/request_signature.ts";
import { slackSignature } from "../integrations/slack_signature.ts";
import { testEdge } from "../testing.ts";

Deno.test("integration routes: off (501) until configured, and never asking for an API key", async () => {
  const t = await testEdge();
  for (const path of ["/v1/integrations/discord/interactions", "/v1/integrations/slack/commands"]) {
    const res = await t.req(path, { method: "POST", body: "{}" }, null);
    assertEquals(res.status, 501);
    const p = await res.json();
    assert(p.detail.includes("not configured") && p.type === "/docs#problem-not-implemented", p.detail);
  }
});

Deno.test("integration routes: signed requests only, once configured", async () => {
  const t = await testEdge({
    integrations: {
      discord: { publicKey: "ab".repeat(32), applicationId: "1" },
      slack: { signingSecret: "s" },
    },
  });
  const discord = await t.req("/v1/integrations/discord/interactions", { method: "POST", body: "{}" }, null);
  assertEquals(discord.status, 401);
  assert((await discord.json()).detail.includes("X-Signature-Ed25519"));
  const slack = await t.req("/v1/integrations/slack/commands", { method: "POST", body: "a=b" }, null);
  assertEquals(slack.status, 401);
  assert((await slack.json()).detail.includes("X-Slack-Signature"));
  const image = await t.req("/v1/integrations/images/tnt_x/file_y?expires=1&signature=00", {}, null);
  assertEquals(image.status, 404);
});

Deno.test("integration routes: a signed request again is a replay (401); signed anew, taken", async () => {
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, true, [
    "sign",
    "verify",
  ]) as CryptoKeyPair;
  const publicKey = toHex(new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey)));
  const t = await testEdge({
    integrations: { discord: { publicKey, applicationId: "1" }, slack: { signingSecret: "s" } },
  });
  const enc = (s: string) => new TextEncoder().encode(s);
  const ts = () => String(Math.floor(t.clock.t / 1000));
  const discord = async (timestamp: string, spell = (sig: string) => sig) => {
    const body = JSON.stringify({ id: "9", application_id: "1", type: 1, token: "x", version: 1 });
    const sig = toHex(
      new Uint8Array(await crypto.subtle.sign("Ed25519", pair.privateKey, enc(timestamp + body))),
    );
    return t.req("/v1/integrations/discord/interactions", {
      method: "POST",
      headers: { "x-signature-ed25519": spell(sig), "x-signature-timestamp": timestamp },
      body,
    }, null);
  };
  const slack = async (timestamp: string) => {
    const body =
      "command=%2Fother&team_id=T1&user_id=U1&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2F1";
    return t.req("/v1/integrations/slack/commands", {
      method: "POST",
      headers: {
        "content-type": "application/x-www-form-urlencoded",
        "x-slack-request-timestamp": timestamp,
        "x-slack-signature": await slackSignature("s", timestamp, enc(body)),
      },
      body,
    }, null);
  };
  const first = ts();
  assertEquals(await (await discord(first)).json(), { type: 1 });
  assertEquals((await (await slack(first)).json()).response_type, "ephemeral");
  t.clock.t += 30_000;
  const replays = [
    await discord(first),
    await discord(first, (sig) => sig.toUpperCase()), // the same signature spelled anew
    await slack(first),
  ];
  for (const res of replays) {
    assertEquals(res.status, 401);
    const p = await res.json();
    assert(p.detail.includes("already received 30 s ago: a replay") && p.title === "Unauthorized", p.detail);
  }
  // A retry as the platforms make it, with a new timestamp and signature, is another request.
  assertEquals(await (await discord(ts())).json(), { type: 1 });
  assertEquals((await slack(ts())).status, 200);
});
