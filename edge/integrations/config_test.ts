import { assert, assertEquals, assertThrows } from "../../gpu-worker/testing.ts";
import { integrationsFromEnv, resolveIntegrations } from "./config.ts";

const KEY = "a".repeat(64);
const envOf = (vars: Record<string, string>) => (name: string) => vars[name];

Deno.test("integrations config: off by default, the real API bases, no private addresses", () => {
  assertEquals(resolveIntegrations(integrationsFromEnv(envOf({}))), {
    discord: null,
    slack: null,
    discordApiBase: "https://discord.com/api/v10",
    slackHooksBase: "https://hooks.slack.com",
    allowPrivate: false,
    waitMs: 14 * 60_000,
  });
});

Deno.test("integrations config: from the environment", () => {
  const c = resolveIntegrations(integrationsFromEnv(envOf({
    DISCORD_PUBLIC_KEY: KEY,
    DISCORD_APPLICATION_ID: "123",
    SLACK_SIGNING_SECRET: "s3cret",
    DISCORD_API_BASE: "http://127.0.0.1:9999/api/",
    SLACK_HOOKS_BASE: "http://127.0.0.1:9998",
    INTEGRATIONS_ALLOW_PRIVATE: "1",
  })));
  assertEquals(c.discord, { publicKey: KEY, applicationId: "123" });
  assertEquals(c.slack, { signingSecret: "s3cret" });
  assertEquals([c.discordApiBase, c.slackHooksBase, c.allowPrivate], [
    "http://127.0.0.1:9999/api",
    "http://127.0.0.1:9998",
    true,
  ]);
});

Deno.test("integrations config: half of Discord's pair, a malformed key or base is refused by name", () => {
  const e = assertThrows(() => integrationsFromEnv(envOf({ DISCORD_PUBLIC_KEY: KEY })), RangeError);
  assert(e.message.includes("DISCORD_APPLICATION_ID"), e.message);
  assertThrows(
    () => resolveIntegrations({ discord: { publicKey: "abc", applicationId: "1" } }),
    RangeError,
    "64 hex digits",
  );
  assertThrows(() => resolveIntegrations({ slackHooksBase: "hooks.slack.com" }), RangeError, "http(s) URL");
});
