/**
 * The chat-bot integrations' configuration: per-platform secrets (Discord's application public key and id,
 * Slack's signing secret) and the platforms' API bases, for the whole server (never per tenant). A platform
 * without its secrets is off: its route answers 501. The API bases are configuration so that tests can
 * point them at a loopback fake; outgoing requests to private or loopback addresses need `allowPrivate`
 * (env INTEGRATIONS_ALLOW_PRIVATE=1, local development and tests only), as webhooks do.
 *
 * @example
 * ```ts
 * const config = integrationsFromEnv((name) => Deno.env.get(name));
 * resolveIntegrations({ slack: { signingSecret: "8f7..." } }).slackHooksBase; // "https://hooks.slack.com"
 * ```
 */

export interface DiscordConfig {
  /** The application's Ed25519 public key, 64 hex digits (the Developer Portal's "Public Key"). */
  publicKey: string;
  applicationId: string;
}

export interface SlackConfig {
  /** The app's signing secret (Basic Information, App Credentials). */
  signingSecret: string;
}

export interface IntegrationsConfig {
  discord: DiscordConfig | null;
  slack: SlackConfig | null;
  /** Follow-ups go to `{discordApiBase}/webhooks/{application id}/{interaction token}`. */
  discordApiBase: string;
  /** A Slack `response_url` is only posted to when its origin (and path prefix) is this one's. */
  slackHooksBase: string;
  /** Outgoing requests to private and loopback addresses (tests, local development). */
  allowPrivate: boolean;
  /** How long a command waits for its prediction (Discord's interaction token lives 15 minutes). */
  waitMs: number;
}

export const DEFAULT_DISCORD_API_BASE = "https://discord.com/api/v10";
export const DEFAULT_SLACK_HOOKS_BASE = "https://hooks.slack.com";
const DEFAULT_WAIT_MS = 14 * 60_000;

function baseUrl(name: string, raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new RangeError(`${name} must be an http(s) URL, got "${raw}"`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw new RangeError(`${name} must be an http(s) URL, got "${raw}"`);
  }
  return raw.replace(/\/+$/, "");
}

/** Defaults for what is not given; checks the key's shape and the bases (RangeError naming the setting). */
export function resolveIntegrations(c: Partial<IntegrationsConfig> = {}): IntegrationsConfig {
  if (c.discord && !/^[0-9a-fA-F]{64}$/.test(c.discord.publicKey)) {
    throw new RangeError(
      `the Discord public key must be 64 hex digits (32 bytes), got ${c.discord.publicKey.length} characters`,
    );
  }
  if (c.discord && !/^\d{1,32}$/.test(c.discord.applicationId)) {
    throw new RangeError(`the Discord application id must be digits, got "${c.discord.applicationId}"`);
  }
  if (c.slack && !c.slack.signingSecret) throw new RangeError("the Slack signing secret is empty");
  return {
    discord: c.discord ?? null,
    slack: c.slack ?? null,
    discordApiBase: baseUrl("the Discord API base", c.discordApiBase ?? DEFAULT_DISCORD_API_BASE),
    slackHooksBase: baseUrl("the Slack hooks base", c.slackHooksBase ?? DEFAULT_SLACK_HOOKS_BASE),
    allowPrivate: c.allowPrivate ?? false,
    waitMs: c.waitMs ?? DEFAULT_WAIT_MS,
  };
}

/**
 * From the environment: DISCORD_PUBLIC_KEY + DISCORD_APPLICATION_ID, SLACK_SIGNING_SECRET, DISCORD_API_BASE,
 * SLACK_HOOKS_BASE, INTEGRATIONS_ALLOW_PRIVATE=1. One of Discord's two without the other is an error.
 */
export function integrationsFromEnv(env: (name: string) => string | undefined): Partial<IntegrationsConfig> {
  const publicKey = env("DISCORD_PUBLIC_KEY")?.trim(), applicationId = env("DISCORD_APPLICATION_ID")?.trim();
  if (!publicKey !== !applicationId) {
    throw new RangeError(
      `set both DISCORD_PUBLIC_KEY and DISCORD_APPLICATION_ID, or neither; got only ${
        publicKey ? "DISCORD_PUBLIC_KEY" : "DISCORD_APPLICATION_ID"
      }`,
    );
  }
  const signingSecret = env("SLACK_SIGNING_SECRET")?.trim();
  const out: Partial<IntegrationsConfig> = {
    discord: publicKey && applicationId ? { publicKey, applicationId } : null,
    slack: signingSecret ? { signingSecret } : null,
    allowPrivate: env("INTEGRATIONS_ALLOW_PRIVATE") === "1",
  };
  const discordApiBase = env("DISCORD_API_BASE"), slackHooksBase = env("SLACK_HOOKS_BASE");
  if (discordApiBase) out.discordApiBase = discordApiBase;
  if (slackHooksBase) out.slackHooksBase = slackHooksBase;
  return out;
}
