import { assert, assertEquals } from "../../gpu-worker/testing.ts";
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
