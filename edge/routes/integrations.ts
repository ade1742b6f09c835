/**
 * Chat-bot integrations. Before the API-key middleware (the platforms sign their requests instead):
 * `POST /v1/integrations/discord/interactions` (Ed25519, PING/PONG, `/imagine` deferred and followed up with
 * the PNG through the interaction webhook), `POST /v1/integrations/slack/commands` (v0 HMAC, `/imagine`
 * acknowledged at once, the result posted to the `response_url`, which must be on the configured Slack hooks
 * base) and `GET /v1/integrations/images/{tenant}/{file}` (the signed image URLs Slack fetches). A signed
 * request is taken once: the same one again within its window is a replay, 401 (`integrations/replays.ts`;
 * the platforms sign a retry anew). With the tenant's key: `POST|GET /v1/integrations/links`,
 * `DELETE /v1/integrations/links/{id}`; a link asked for with the key is pending until the place sends its
 * code back (Discord `/link code:...` by a member who may manage the server, Slack `/imagine link CODE`). A
 * command runs one native prediction for the linked tenant (`integrations/imagine.ts`), keyed by the
 * platform's own request id so that a redelivered command names the same job, and rate-limited per linked
 * place.
 *
 * @example
 * ```ts
 * integrationRoutes(app, api); // before the API-key middleware
 * integrationLinkRoutes(app, api); // after it
 * ```
 */
import type { Hono } from "hono";
import {
  CreateIntegrationLinkRequest,
  DISCORD,
  DiscordInteraction,
  DiscordInteractionResponse,
  IntegrationLink,
  IntegrationLinkList,
  type IntegrationPlatform,
  SlackCommand,
  SlackCommandResponse,
} from "../../shared/integrations.ts";
import type { Tenant } from "../auth/api_keys.ts";
import { parseJson, readBody, validate } from "../body.ts";
import { type Edge, type EdgeContext, type EdgeEnv, originOf, param } from "../context.ts";
import { jsonBody } from "../idempotency.ts";
import { verifyDiscordSignature } from "../integrations/discord_signature.ts";
import { checkImageSignature, signedImageUrl } from "../integrations/image_urls.ts";
import {
  CommandError,
  imagine,
  type ImagineOptions,
  imagineOptions,
  imagineOptionsFromText,
  type ImagineOutcome,
  OPTION_NAMES,
} from "../integrations/imagine.ts";
import {
  confirmLink,
  deleteLink,
  type IntegrationLinkRecord,
  LinkCodeError,
  LinkConflictError,
  linkedTenant,
  listLinks,
  requestLink,
} from "../integrations/links.ts";
import { postOutgoing, redact } from "../integrations/outgoing.ts";
import { refuseReplay } from "../integrations/replays.ts";
import { SignatureError } from "../integrations/request_signature.ts";
import { verifySlackSignature } from "../integrations/slack_signature.ts";
import { type OpenApi, route } from "../openapi.ts";
import { notImplemented } from "../capabilities.ts";
import { ApiProblem, notFound } from "../problem.ts";
import type { FileRecord } from "../records.ts";

const notConfigured = (platform: string, env: string) =>
  notImplemented(`the ${platform} integration is not configured on this server (set ${env})`);

/** A refused signature: 401, as both platforms expect of an endpoint they verify. */
async function signed(check: () => Promise<void>): Promise<void> {
  try {
    await check();
  } catch (e) {
    if (e instanceof SignatureError) throw new ApiProblem(401, "unauthorized", "Unauthorized", e.message);
    throw e;
  }
}

const quoted = (prompt: string, max = 200) =>
  `"${prompt.length > max ? `${prompt.slice(0, max)}…` : prompt}"`;

/** A link as its tenant sees it: no tenant id, no code hash; a pending one says how to confirm it. */
function publicLink({ tenant: _t, code_key: _k, ...l }: IntegrationLinkRecord): IntegrationLink {
  if (l.status !== "pending" || !l.code) return l;
  const confirm_with = l.platform === "discord"
    ? `/link code:${l.code} in the Discord server (by a member with Manage Server), or in a DM with the app for a user`
    : `/imagine link ${l.code} in the Slack workspace`;
  return { ...l, confirm_with };
}

/** A link confirmed from the place, or a sentence saying why not. */
async function confirmFrom(edge: Edge, platform: IntegrationPlatform, place: string, code: string) {
  try {
    const link = await confirmLink(edge.metadata, platform, place, code, edge.now());
    const tenant = await edge.metadata.get<Tenant>(["tenants", link.tenant]);
    return `Linked: commands here now use the account ${tenant?.name ?? link.tenant} (link ${link.id}).`;
  } catch (e) {
    if (e instanceof LinkCodeError || e instanceof LinkConflictError) return `Not linked: ${e.message}.`;
    throw e;
  }
}

/** The linked tenant, or a sentence telling how to link the place. */
async function tenantOf(edge: Edge, platform: IntegrationPlatform, externalId: string, what: string) {
  const id = await linkedTenant(edge.metadata, platform, externalId);
  const tenant = id ? await edge.metadata.get<Tenant>(["tenants", id]) : null;
  if (tenant) return { tenant };
  return {
    refusal:
      `This ${what} is not linked to an account. The account asks for it with POST /v1/integrations/links ` +
      `{"platform": "${platform}", "external_id": "${externalId}"} and its API key, then confirms it here ` +
      `with the code it gets (${platform === "discord" ? "/link code:..." : "/imagine link ..."}).`,
  };
}

/** The per-place rate limit (the API keys' policy), or a sentence saying when to retry. */
function rateLimited(edge: Edge, platform: IntegrationPlatform, externalId: string): string | null {
  const d = edge.limiter.take(`${platform}:${externalId}`);
  return d.allowed
    ? null
    : `Too many commands from here: ${edge.limiter.policy.limit} per ${
      edge.limiter.policy.windowMs / 1000
    } s; retry in ${d.resetS} s.`;
}

/** Runs the command after the answer went out; what goes wrong on the way is logged, never thrown. */
function later(
  what: string,
  c: EdgeContext,
  o: ImagineOptions,
  deliver: (r: ImagineOutcome) => Promise<void>,
) {
  imagine(c, o).then(deliver).catch((e) => console.error(`${what}:`, e));
}

async function multipart(form: FormData): Promise<{ body: Uint8Array; type: string }> {
  const req = new Request("http://form.invalid/", { method: "POST", body: form });
  return { body: new Uint8Array(await req.arrayBuffer()), type: req.headers.get("content-type")! };
}

/** The follow-up message: the PNGs as attachments, or what went wrong. Mentions in prompts never ping. */
async function discordFollowUp(edge: Edge, url: string, o: ImagineOptions, r: ImagineOutcome) {
  const allowPrivate = edge.integrations.allowPrivate;
  const none = { parse: [] as string[] };
  if (!r.ok) {
    const content = `Could not imagine ${quoted(o.prompt)}: ${r.reason}`.slice(0, 2000);
    await postOutgoing(url, JSON.stringify({ content, allowed_mentions: none }), "application/json", {
      allowPrivate,
    });
    return;
  }
  const form = new FormData();
  const files = r.images.map((img, n) => ({ id: n, filename: `${r.job.id}-${n}.png`, bytes: img.bytes }));
  form.set(
    "payload_json",
    JSON.stringify({
      content: `${quoted(o.prompt, 1800)} (${r.job.id}, ${r.job.price} credits)`,
      allowed_mentions: none,
      attachments: files.map(({ id, filename }) => ({ id, filename })),
    }),
  );
  for (const f of files) {
    form.set(
      `files[${f.id}]`,
      new File([f.bytes as Uint8Array<ArrayBuffer>], f.filename, { type: "image/png" }),
    );
  }
  const { body, type } = await multipart(form);
  await postOutgoing(url, body, type, { allowPrivate });
}

const slackEscape = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

/** The `response_url` message: image blocks with signed URLs, or what went wrong (to the user only). */
async function slackResponse(c: EdgeContext, url: string, o: ImagineOptions, r: ImagineOutcome) {
  const edge = c.get("edge");
  let message: Record<string, unknown>;
  if (!r.ok) {
    message = {
      response_type: "ephemeral",
      text: slackEscape(`Could not imagine ${quoted(o.prompt)}: ${r.reason}`),
    };
  } else {
    const origin = originOf(c), tenant = c.get("tenant").id;
    const urls = await Promise.all(r.images.map((img) => signedImageUrl(edge, origin, tenant, img.id)));
    const caption = `${quoted(o.prompt, 1800)} (${r.job.id}, ${r.job.price} credits)`;
    message = {
      response_type: "in_channel",
      text: slackEscape(caption),
      blocks: [
        { type: "section", text: { type: "mrkdwn", text: slackEscape(caption) } },
        ...urls.map((image_url) => ({ type: "image", image_url, alt_text: o.prompt.slice(0, 2000) })),
      ],
    };
  }
  await postOutgoing(url, JSON.stringify(message), "application/json", {
    allowPrivate: edge.integrations.allowPrivate,
  });
}

/** A `response_url` on the configured hooks base (same origin, under its path); the URL, or null. */
function onHooksBase(raw: string, base: string): URL | null {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return null;
  }
  const b = new URL(base);
  const prefix = b.pathname.replace(/\/?$/, "/");
  return url.origin === b.origin && !url.username && !url.password && url.pathname.startsWith(prefix)
    ? url
    : null;
}

export function integrationRoutes(app: Hono<EdgeEnv>, api: OpenApi): void {
  const tags = ["integrations"];
  route(app, api, {
    method: "post",
    path: "/v1/integrations/discord/interactions",
    summary: "Discord interactions endpoint: PING, and the /imagine command (deferred, then followed up)",
    description:
      "Signed by Discord (Ed25519 over timestamp + body with the application's key; 401 otherwise, for " +
      "timestamps over 5 minutes old, and for a request received already: a replay). /imagine answers " +
      "{type: 5} at once and posts the PNG to the interaction's webhook when the prediction ends, paid by " +
      "the tenant the guild (or the user, in DMs) is linked to. Unknown commands, bad options and unlinked " +
      "places are answered at once, ephemerally.",
    tags,
    auth: "none",
    headers: {
      "X-Signature-Ed25519": { description: "Discord's signature (hex)" },
      "X-Signature-Timestamp": { description: "Unix seconds" },
    },
    body: { schema: DiscordInteraction },
    responses: { 200: { description: "An interaction response", schema: DiscordInteractionResponse } },
  }, async (c) => {
    const edge = c.get("edge");
    const discord = edge.integrations.discord;
    if (!discord) throw notConfigured("Discord", "DISCORD_PUBLIC_KEY and DISCORD_APPLICATION_ID");
    const raw = await readBody(c.req.raw, edge.maxJsonBytes);
    const timestamp = c.req.header("x-signature-timestamp");
    await signed(async () => {
      await verifyDiscordSignature({
        publicKey: discord.publicKey,
        signature: c.req.header("x-signature-ed25519"),
        timestamp,
        body: raw,
        nowMs: edge.now(),
      });
      await refuseReplay(
        edge.metadata,
        { platform: "discord", timestamp: timestamp!, body: raw },
        edge.now(),
      );
    });
    const i = validate(DiscordInteraction, parseJson(raw));
    if (i.application_id !== discord.applicationId) {
      throw new ApiProblem(
        400,
        "invalid-request",
        "Invalid request",
        `the interaction is for application ${i.application_id}; this server is configured for ${discord.applicationId}`,
      );
    }
    if (i.type === DISCORD.PING) return c.json({ type: DISCORD.PONG });
    const ephemeral = (content: string) =>
      c.json({
        type: DISCORD.CHANNEL_MESSAGE,
        data: { content: content.slice(0, 2000), flags: DISCORD.EPHEMERAL },
      });
    if (i.type !== DISCORD.APPLICATION_COMMAND) {
      throw new ApiProblem(
        400,
        "invalid-request",
        "Invalid request",
        `interaction type ${i.type} is not answered here; expected 1 (PING) or 2 (APPLICATION_COMMAND)`,
      );
    }
    const place = i.guild_id ?? i.user?.id ?? i.member?.user.id;
    if (i.data?.name === "link") {
      const code = i.data.options?.find((x) => x.name === "code")?.value;
      if (typeof code !== "string" || !code.trim()) {
        return ephemeral("/link: give the code, as /link code:...");
      }
      if (!place) return ephemeral("/link: the interaction names neither a server nor a user");
      if (i.guild_id) {
        const perms = BigInt(i.member?.permissions ?? "0");
        if (!(perms & (DISCORD.MANAGE_GUILD | DISCORD.ADMINISTRATOR))) {
          return ephemeral("/link: linking this server takes a member with Manage Server or Administrator.");
        }
      }
      return ephemeral(await confirmFrom(edge, "discord", place, code));
    }
    if (i.data?.name !== "imagine") {
      return ephemeral(
        `Unknown command /${i.data?.name ?? "?"}: this application answers /imagine and /link.`,
      );
    }
    let options: ImagineOptions;
    try {
      const given = i.data.options ?? [];
      const unknown = given.find((x) => !(OPTION_NAMES as readonly string[]).includes(x.name));
      if (unknown) {
        throw new CommandError(`unknown option "${unknown.name}" (expected ${OPTION_NAMES.join(", ")})`);
      }
      options = imagineOptions(Object.fromEntries(given.map((x) => [x.name, x.value])));
    } catch (e) {
      if (e instanceof CommandError) return ephemeral(`/imagine: ${e.message}`);
      throw e;
    }
    if (!place) return ephemeral("/imagine: the interaction names neither a server nor a user");
    const linked = await tenantOf(edge, "discord", place, i.guild_id ? "Discord server" : "Discord user");
    if (!linked.tenant) return ephemeral(linked.refusal);
    const limited = rateLimited(edge, "discord", place);
    if (limited) return ephemeral(limited);
    c.set("tenant", linked.tenant);
    c.set("idempotencyKey", `discord-interaction\n${i.id}`);
    const followUp = `${edge.integrations.discordApiBase}/webhooks/${discord.applicationId}/${i.token}`;
    later(
      `discord follow-up ${redact(followUp)}`,
      c,
      options,
      (r) => discordFollowUp(edge, followUp, options, r),
    );
    return c.json({ type: DISCORD.DEFERRED_CHANNEL_MESSAGE });
  });

  route(app, api, {
    method: "post",
    path: "/v1/integrations/slack/commands",
    summary:
      "Slack slash commands: /imagine <prompt> [--adapter ID] [--slider id:scale] [--steps N] [--seed N]",
    description:
      "Signed by Slack (v0 HMAC-SHA256 with the signing secret over v0:timestamp:body; 401 otherwise, for " +
      "timestamps over 5 minutes old, and for a request received already: a replay). Acknowledged at " +
      "once with an ephemeral message; the image is posted to response_url (only on the configured Slack " +
      "hooks base, else 400) as an image block whose URL is signed and expires in 7 days. Paid by the " +
      "tenant the team is linked to.",
    tags,
    auth: "none",
    headers: {
      "X-Slack-Signature": { description: "v0=<hex HMAC-SHA256>" },
      "X-Slack-Request-Timestamp": { description: "Unix seconds" },
    },
    body: { schema: SlackCommand, contentType: "application/x-www-form-urlencoded" },
    responses: { 200: { description: "A message to the user", schema: SlackCommandResponse } },
  }, async (c) => {
    const edge = c.get("edge");
    const slack = edge.integrations.slack;
    if (!slack) throw notConfigured("Slack", "SLACK_SIGNING_SECRET");
    const raw = await readBody(c.req.raw, edge.maxJsonBytes);
    const timestamp = c.req.header("x-slack-request-timestamp");
    await signed(async () => {
      await verifySlackSignature({
        signingSecret: slack.signingSecret,
        signature: c.req.header("x-slack-signature"),
        timestamp,
        body: raw,
        nowMs: edge.now(),
      });
      await refuseReplay(edge.metadata, { platform: "slack", timestamp: timestamp!, body: raw }, edge.now());
    });
    const cmd = validate(
      SlackCommand,
      Object.fromEntries(new URLSearchParams(new TextDecoder().decode(raw))),
    );
    const base = edge.integrations.slackHooksBase;
    const responseUrl = onHooksBase(cmd.response_url, base);
    if (!responseUrl) {
      const reason = `expected a URL under ${base}, got one on ${
        URL.parse(cmd.response_url)?.origin ?? "no origin"
      }`;
      throw new ApiProblem(400, "invalid-request", "Invalid request", `response_url: ${reason}`, {
        invalid_fields: [{ name: "response_url", reason }],
      });
    }
    const ephemeral = (text: string) => c.json({ response_type: "ephemeral", text: slackEscape(text) });
    if (cmd.command !== "/imagine") {
      return ephemeral(`Unknown command ${cmd.command}: this app answers /imagine.`);
    }
    const linkCode = cmd.text.trim().match(/^link\s+(\S+)$/i);
    if (linkCode) return ephemeral(await confirmFrom(edge, "slack", cmd.team_id, linkCode[1]));
    let options: ImagineOptions;
    try {
      options = imagineOptionsFromText(cmd.text);
    } catch (e) {
      if (!(e instanceof CommandError)) throw e;
      return ephemeral(
        `/imagine: ${e.message}. Usage: /imagine <prompt> [--adapter ID] [--slider id:scale] ` +
          "[--steps N] [--seed N] [--model M]",
      );
    }
    const linked = await tenantOf(edge, "slack", cmd.team_id, "Slack workspace");
    if (!linked.tenant) return ephemeral(linked.refusal);
    const limited = rateLimited(edge, "slack", cmd.team_id);
    if (limited) return ephemeral(limited);
    c.set("tenant", linked.tenant);
    if (cmd.trigger_id) c.set("idempotencyKey", `slack-command\n${cmd.trigger_id}`);
    later(
      `slack response ${redact(responseUrl.href)}`,
      c,
      options,
      (r) => slackResponse(c, responseUrl.href, options, r),
    );
    return ephemeral(`Imagining ${quoted(options.prompt)}; the image follows here when it is ready.`);
  });

  route(app, api, {
    method: "get",
    path: "/v1/integrations/images/:tenant/:file",
    summary: "An image a chat follow-up links to (signed URL, no key; expires after 7 days)",
    tags,
    auth: "none",
    query: {
      expires: { description: "Unix seconds" },
      signature: { description: "This server's HMAC of tenant, file and expiry" },
    },
    responses: { 200: { description: "The PNG", contentType: "image/png" } },
  }, async (c) => {
    const edge = c.get("edge");
    const tenant = param(c, "tenant"), file = param(c, "file");
    const ok = await checkImageSignature(
      edge,
      tenant,
      file,
      c.req.query("expires"),
      c.req.query("signature"),
    );
    const rec = ok ? await edge.metadata.get<FileRecord>(["files", tenant, file]) : null;
    const bytes = rec ? await edge.blobs.get(rec.sha256) : null;
    if (!rec || !bytes) {
      throw new ApiProblem(
        404,
        "not-found",
        "Not Found",
        "no image at this URL: expected a link from a chat follow-up, unexpired and unchanged, to a file that still exists",
      );
    }
    return c.body(bytes as Uint8Array<ArrayBuffer>, 200, {
      "content-type": rec.content_type,
      "content-length": String(bytes.byteLength),
      "cache-control": "public, max-age=86400, immutable",
      "x-content-type-options": "nosniff",
    });
  });
}

export function integrationLinkRoutes(app: Hono<EdgeEnv>, api: OpenApi): void {
  const tags = ["integrations"];
  route(app, api, {
    method: "post",
    path: "/v1/integrations/links",
    summary:
      "Link a Discord guild or user, or a Slack team, to this account (its commands spend its credits)",
    description:
      "202 with a pending link and its one-time code (valid 1 hour): the place confirms it by sending the " +
      "code back (Discord: /link code:... by a member with Manage Server, or the user in a DM; Slack: " +
      "/imagine link ... in the workspace), so only an account the place itself names can spend for it. 200 " +
      "with the active link when it is linked here already; 409 when another account holds it. Asking again " +
      "replaces the pending code.",
    tags,
    auth: "api_key",
    body: { schema: CreateIntegrationLinkRequest },
    responses: {
      202: { description: "Pending: confirm it from the place with the code", schema: IntegrationLink },
      200: { description: "Linked already", schema: IntegrationLink },
    },
  }, async (c) => {
    const body = await jsonBody(c, CreateIntegrationLinkRequest);
    const edge = c.get("edge");
    try {
      const { link, created } = await requestLink(
        edge.metadata,
        c.get("tenant").id,
        body.platform,
        body.external_id,
        edge.now(),
      );
      return c.json(publicLink(link), created ? 202 : 200);
    } catch (e) {
      if (e instanceof LinkConflictError) {
        throw new ApiProblem(409, "link-conflict", "Linked elsewhere", e.message);
      }
      throw e;
    }
  });

  route(app, api, {
    method: "get",
    path: "/v1/integrations/links",
    summary: "This account's chat links",
    tags,
    auth: "api_key",
    responses: { 200: { description: "The links", schema: IntegrationLinkList } },
  }, async (c) => {
    const links = await listLinks(c.get("edge").metadata, c.get("tenant").id);
    return c.json({ data: links.map(publicLink) });
  });

  route(app, api, {
    method: "delete",
    path: "/v1/integrations/links/:id",
    summary: "Unlink (the place's commands are refused until it is linked again)",
    tags,
    auth: "api_key",
    responses: { 204: { description: "Unlinked" } },
  }, async (c) => {
    const id = param(c, "id");
    if (!(await deleteLink(c.get("edge").metadata, c.get("tenant").id, id))) throw notFound("link", id);
    return c.body(null, 204);
  });
}
