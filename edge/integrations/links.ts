/**
 * Links of chat places to tenants, in the metadata store: a Discord guild (or a user, for DMs) or a Slack
 * team is linked to one tenant, whose credits pay for the commands run there. A link is the tenant's object
 * (`["integration_links", tenant, id]`, another tenant's is not found) and an owner entry per place
 * (`["integration_link_owners", platform, external id]`, written with `create`), so that a place is linked
 * to at most one tenant even under concurrent requests.
 *
 * A tenant's own request (`requestLink`, the API route) only makes a pending link with a one-time code; the
 * link becomes active when the code comes back from inside the place (`confirmLink`: a signed Discord `/link`
 * by a member who may manage the server, or a Slack `/imagine link` from the workspace), so no account can
 * claim a place it is not in. The operator's `createLink` (the CLI) links at once.
 *
 * @example
 * ```ts
 * const { link } = await requestLink(edge.metadata, "tnt_1", "discord", "1122334455", Date.now());
 * await confirmLink(edge.metadata, "discord", "1122334455", link.code!, Date.now()); // active
 * await linkedTenant(edge.metadata, "discord", "1122334455"); // "tnt_1"
 * ```
 */
import type { IntegrationLink, IntegrationPlatform } from "../../shared/integrations.ts";
import type { MetadataStore } from "../../shared/metadata_store.ts";
import { newId } from "../context.ts";

export interface IntegrationLinkRecord extends IntegrationLink {
  tenant: string;
  /** A pending link's code, hashed (the code itself is shown once, to the tenant). */
  code_key?: string;
}

interface Owner {
  tenant: string;
  id: string;
}

/** The place is linked to another tenant already. */
export class LinkConflictError extends Error {
  constructor(readonly platform: IntegrationPlatform, readonly externalId: string) {
    super(`${platform} ${externalId} is linked to another account already; unlink it there first`);
    this.name = "LinkConflictError";
  }
}

/** The link cannot be confirmed with this code here: unknown, expired, or made for another place. */
export class LinkCodeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "LinkCodeError";
  }
}

/** How long a pending link's code may be used. */
export const LINK_CODE_TTL_MS = 60 * 60 * 1000;
/** 32 letters and digits without 0/O and 1/I: 10 of them are 50 random bits. */
const CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

function newCode(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(10));
  return Array.from(bytes, (b) => CODE_ALPHABET[b & 31]).join("");
}

async function codeKey(code: string) {
  const normalized = code.trim().toUpperCase().replace(/[\s-]/g, "");
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(normalized)));
  return [
    "integration_link_codes",
    Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join(""),
  ] as const;
}

/** Links stored before links had a status are active. */
const withStatus = (l: IntegrationLinkRecord): IntegrationLinkRecord => ({
  ...l,
  status: l.status ?? "active",
});

const ownerKey = (platform: IntegrationPlatform, externalId: string) =>
  ["integration_link_owners", platform, externalId] as const;
const linkKey = (tenant: string, id: string) => ["integration_links", tenant, id] as const;

/** The owner entry of a place, when its link still exists (a write cut short leaves none behind for long). */
async function ownerOf(metadata: MetadataStore, platform: IntegrationPlatform, externalId: string) {
  const owner = await metadata.get<Owner>(ownerKey(platform, externalId));
  if (!owner) return null;
  const link = await metadata.get<IntegrationLinkRecord>(linkKey(owner.tenant, owner.id));
  return link ? { owner, link } : { owner, link: null };
}

/**
 * Links a place to `tenant`; `created` is false when it was linked to this tenant already (the same link
 * comes back). A LinkConflictError when another tenant holds it.
 */
export async function createLink(
  metadata: MetadataStore,
  tenant: string,
  platform: IntegrationPlatform,
  externalId: string,
): Promise<{ link: IntegrationLinkRecord; created: boolean }> {
  for (let attempt = 0; attempt < 3; attempt++) {
    const link: IntegrationLinkRecord = {
      id: newId("lnk"),
      tenant,
      platform,
      external_id: externalId,
      created_at: new Date().toISOString(),
      status: "active",
    };
    // The link first, then the claim: a claim never points at a link that was not written.
    await metadata.set(linkKey(tenant, link.id), link);
    if (await metadata.create(ownerKey(platform, externalId), { tenant, id: link.id } satisfies Owner)) {
      return { link, created: true };
    }
    await metadata.delete(linkKey(tenant, link.id));
    const found = await ownerOf(metadata, platform, externalId);
    if (found?.link) {
      if (found.owner.tenant === tenant) return { link: withStatus(found.link), created: false };
      throw new LinkConflictError(platform, externalId);
    }
    // A claim whose link is gone (a write cut short): take it over.
    if (found) await metadata.delete(ownerKey(platform, externalId));
  }
  throw new Error(`the link of ${platform} ${externalId} keeps changing; try again`);
}

/**
 * A tenant asks for a place: `created` false with the active link when it holds the place already, a
 * LinkConflictError when another tenant does, else a new pending link whose `code` (shown once here, kept
 * only as a hash) confirms it until `expires_at`. An earlier pending link of this tenant for the place is
 * replaced.
 */
export async function requestLink(
  metadata: MetadataStore,
  tenant: string,
  platform: IntegrationPlatform,
  externalId: string,
  nowMs: number,
): Promise<{ link: IntegrationLinkRecord; created: boolean }> {
  const found = await ownerOf(metadata, platform, externalId);
  if (found?.link) {
    if (found.owner.tenant === tenant) return { link: withStatus(found.link), created: false };
    throw new LinkConflictError(platform, externalId);
  }
  for (const old of await listLinks(metadata, tenant)) {
    if (old.status === "pending" && old.platform === platform && old.external_id === externalId) {
      await deleteLink(metadata, tenant, old.id);
    }
  }
  const code = newCode();
  const link: IntegrationLinkRecord = {
    id: newId("lnk"),
    tenant,
    platform,
    external_id: externalId,
    created_at: new Date(nowMs).toISOString(),
    status: "pending",
    expires_at: new Date(nowMs + LINK_CODE_TTL_MS).toISOString(),
    code_key: (await codeKey(code))[1],
  };
  await metadata.set(linkKey(tenant, link.id), link);
  await metadata.set(await codeKey(code), { tenant, id: link.id } satisfies Owner);
  return { link: { ...link, code }, created: true };
}

/**
 * The place sends back a code: its pending link becomes active (the place claimed for its tenant). A
 * LinkCodeError when the code is unknown, used, expired or for another place; a LinkConflictError when
 * another tenant linked the place meanwhile.
 */
export async function confirmLink(
  metadata: MetadataStore,
  platform: IntegrationPlatform,
  externalId: string,
  code: string,
  nowMs: number,
): Promise<IntegrationLinkRecord> {
  const key = await codeKey(code);
  const ref = await metadata.get<Owner>(key);
  const pending = ref ? await metadata.get<IntegrationLinkRecord>(linkKey(ref.tenant, ref.id)) : null;
  if (!ref || !pending || pending.status !== "pending") {
    throw new LinkCodeError(
      "this code is not known: ask the account for a new one (POST /v1/integrations/links)",
    );
  }
  if (nowMs > Date.parse(pending.expires_at!)) {
    await deleteLink(metadata, ref.tenant, ref.id);
    throw new LinkCodeError(
      "this code has expired: ask the account for a new one (POST /v1/integrations/links)",
    );
  }
  if (pending.platform !== platform || pending.external_id !== externalId) {
    throw new LinkCodeError("this code was made for another place; it links only the one it was asked for");
  }
  const { code_key: _k, expires_at: _e, ...rest } = pending;
  const link: IntegrationLinkRecord = {
    ...rest,
    status: "active",
    created_at: new Date(nowMs).toISOString(),
  };
  await metadata.set(linkKey(ref.tenant, ref.id), link);
  if (
    !(await metadata.create(
      ownerKey(platform, externalId),
      { tenant: ref.tenant, id: link.id } satisfies Owner,
    ))
  ) {
    const found = await ownerOf(metadata, platform, externalId);
    if (found?.link && found.owner.tenant !== ref.tenant) {
      await metadata.set(linkKey(ref.tenant, ref.id), pending);
      throw new LinkConflictError(platform, externalId);
    }
    if (found?.link) {
      await metadata.delete(linkKey(ref.tenant, ref.id));
      await metadata.delete(key);
      return withStatus(found.link);
    }
    // A claim whose link is gone (a write cut short): take it over.
    if (found) await metadata.delete(ownerKey(platform, externalId));
    if (
      !(await metadata.create(
        ownerKey(platform, externalId),
        { tenant: ref.tenant, id: link.id } satisfies Owner,
      ))
    ) {
      await metadata.set(linkKey(ref.tenant, ref.id), pending);
      throw new Error(`the link of ${platform} ${externalId} keeps changing; try again`);
    }
  }
  await metadata.delete(key);
  return link;
}

/** The tenant's links, oldest first. */
export async function listLinks(metadata: MetadataStore, tenant: string): Promise<IntegrationLinkRecord[]> {
  const page = await metadata.list<IntegrationLinkRecord>(["integration_links", tenant], { limit: 1000 });
  return page.items.map((i) => withStatus(i.value)).sort((a, b) => a.created_at < b.created_at ? -1 : 1);
}

/** Every tenant's links (the CLI's `list`). */
export async function listAllLinks(metadata: MetadataStore): Promise<IntegrationLinkRecord[]> {
  const out: IntegrationLinkRecord[] = [];
  let cursor: string | undefined;
  do {
    const page = await metadata.list<IntegrationLinkRecord>(["integration_links"], { limit: 1000, cursor });
    out.push(...page.items.map((i) => withStatus(i.value)));
    cursor = page.next ?? undefined;
  } while (cursor);
  return out;
}

export function getLink(metadata: MetadataStore, tenant: string, id: string) {
  return metadata.get<IntegrationLinkRecord>(linkKey(tenant, id));
}

/** Removes the tenant's link `id`; false when the tenant has no such link. */
export async function deleteLink(metadata: MetadataStore, tenant: string, id: string): Promise<boolean> {
  const link = await getLink(metadata, tenant, id);
  if (!link) return false;
  const owner = await metadata.get<Owner>(ownerKey(link.platform, link.external_id));
  if (owner?.id === id) await metadata.delete(ownerKey(link.platform, link.external_id));
  if (link.code_key) await metadata.delete(["integration_link_codes", link.code_key]);
  await metadata.delete(linkKey(tenant, id));
  return true;
}

/** The tenant a place is linked to, or null. */
export async function linkedTenant(
  metadata: MetadataStore,
  platform: IntegrationPlatform,
  externalId: string,
): Promise<string | null> {
  const found = await ownerOf(metadata, platform, externalId);
  return found?.link && found.link.status !== "pending" ? found.owner.tenant : null;
}
