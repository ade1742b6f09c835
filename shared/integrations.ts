/**
 * Chat-bot integrations (`/v1/integrations/*`): the link of a Discord guild or user, or a Slack team, to a
 * tenant (whose credits pay for what its members imagine), the parts of Discord's interaction and Slack's
 * slash command this server reads, and the `/imagine` command as Discord registers it. Written once here: the
 * edge validates with these, `/openapi.json` and `docs/integrations.md` show them.
 *
 * @example
 * ```ts
 * CreateIntegrationLinkRequest.parse({ platform: "discord", external_id: "1122334455667788" });
 * DiscordInteraction.parse({ id: "1", application_id: "2", type: 1, token: "t", version: 1 }).type; // 1 (PING)
 * ```
 */
import { z } from "zod";

export const INTEGRATION_PLATFORMS = ["discord", "slack"] as const;
export const IntegrationPlatform = z.enum(INTEGRATION_PLATFORMS);
export type IntegrationPlatform = z.infer<typeof IntegrationPlatform>;

/** A Discord guild or user id (a snowflake), or a Slack team id (`T0123ABCD`). */
export const ExternalId = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, {
  message: "an id of 1 to 64 letters, digits, '_' or '-' (a Discord guild/user id, a Slack team id)",
});

export const CreateIntegrationLinkRequest = z.object({
  platform: IntegrationPlatform,
  external_id: ExternalId,
}).strict();
export type CreateIntegrationLinkRequest = z.infer<typeof CreateIntegrationLinkRequest>;

/**
 * A link: `active` once the place confirmed it (or the operator made it), `pending` while it waits for the
 * place to send back `code` (`/link code:...` in Discord, `/imagine link ...` in Slack) before `expires_at`.
 */
export const IntegrationLink = z.object({
  id: z.string(),
  platform: IntegrationPlatform,
  external_id: z.string(),
  created_at: z.string(),
  status: z.enum(["active", "pending"]),
  code: z.string().optional(),
  expires_at: z.string().optional(),
  /** For a pending link: what to run in the place to confirm it. */
  confirm_with: z.string().optional(),
});
export type IntegrationLink = z.infer<typeof IntegrationLink>;

export const IntegrationLinkList = z.object({ data: z.array(IntegrationLink) });

/** Discord's interaction types and the response types this server answers with. */
export const DISCORD = {
  PING: 1,
  APPLICATION_COMMAND: 2,
  PONG: 1,
  CHANNEL_MESSAGE: 4,
  DEFERRED_CHANNEL_MESSAGE: 5,
  EPHEMERAL: 64,
  /** Permission bits of `member.permissions` that may link a guild: Administrator, Manage Server. */
  ADMINISTRATOR: 1n << 3n,
  MANAGE_GUILD: 1n << 5n,
} as const;

const DiscordUser = z.object({ id: z.string() }).loose();

/** What this server reads of a Discord interaction (the rest passes through unread). */
export const DiscordInteraction = z.object({
  id: z.string(),
  application_id: z.string(),
  type: z.number().int(),
  token: z.string().regex(/^[A-Za-z0-9._=-]{1,500}$/, { message: "an interaction token" }),
  guild_id: z.string().optional(),
  /** In a guild: the member, with their permissions in the channel (a decimal bit set). */
  member: z.object({ user: DiscordUser, permissions: z.string().regex(/^\d{1,30}$/).optional() }).loose()
    .optional(),
  user: DiscordUser.optional(),
  data: z.object({
    name: z.string(),
    options: z.array(z.object({ name: z.string(), type: z.number(), value: z.unknown().optional() }).loose())
      .optional(),
  }).loose().optional(),
}).loose();
export type DiscordInteraction = z.infer<typeof DiscordInteraction>;

export const DiscordInteractionResponse = z.object({
  type: z.number().int(),
  data: z.object({ content: z.string(), flags: z.number().int().optional() }).optional(),
});

/** What this server reads of a Slack slash command's form (the rest passes through unread). */
export const SlackCommand = z.object({
  command: z.string(),
  text: z.string().default(""),
  team_id: z.string(),
  user_id: z.string(),
  response_url: z.string(),
  trigger_id: z.string().optional(),
}).loose();
export type SlackCommand = z.infer<typeof SlackCommand>;

export const SlackCommandResponse = z.object({
  response_type: z.enum(["ephemeral", "in_channel"]),
  text: z.string(),
});

/** Longest prompt a chat command takes (Discord caps a string option at 6000; Slack's text is freer). */
export const MAX_CHAT_PROMPT = 2000;
/** Most steps a chat command may ask for (the command's own limit; the API's is higher). */
export const MAX_CHAT_STEPS = 50;

/**
 * `/imagine` as Discord registers it (`PUT /applications/{id}/commands`, a CHAT_INPUT command): required
 * options first, as Discord wants.
 */
export const DISCORD_IMAGINE_COMMAND = {
  name: "imagine",
  type: 1,
  description: "Generate an image with this server's linked account",
  options: [
    { name: "prompt", description: "What to draw", type: 3, required: true, max_length: MAX_CHAT_PROMPT },
    { name: "adapter", description: "An adapter (id or name) of the linked account", type: 3 },
    { name: "slider", description: "A slider as id:scale, e.g. sld_abc:2.5", type: 3 },
    { name: "steps", description: "Sampling steps", type: 4, min_value: 1, max_value: MAX_CHAT_STEPS },
    { name: "seed", description: "A seed, for the same image again", type: 4, min_value: 0 },
    { name: "model", description: "A base model (default: the adapter's, or the only one)", type: 3 },
  ],
} as const;

/**
 * `/link` as Discord registers it: confirms a link an account asked for (`POST /v1/integrations/links`) from
 * inside the place. In a server it takes a member with Manage Server (or Administrator).
 */
export const DISCORD_LINK_COMMAND = {
  name: "link",
  type: 1,
  description: "Link this server (or, in a DM, you) to the account that asked for it",
  options: [
    { name: "code", description: "The code POST /v1/integrations/links answered", type: 3, required: true },
  ],
} as const;
