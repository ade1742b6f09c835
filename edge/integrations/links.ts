/**
 * Links of chat places to tenants, in the metadata store: a Discord guild (or a user, for DMs) or a Slack
 * team is linked to one tenant, whose credits pay for the commands run there. A link is the tenant's object
 * (`["integration_links", tenant, id]`, another tenant's is not found) and an owner entry per place
 * (`["integration_link_owners", platform, external id]`, written with `create`), so that a place is linked
 * to at most one tenant even under concurrent requests.
 *
 * @example
 * ```ts
 * const { link } = await createLink(edge.metadata, "tnt_1", "discord", "1122334455");
 * await linkedTenant(edge.metadata, "discord", "1122334455"); // "tnt_1"
 * ```
 */
import type { IntegrationLink, IntegrationPlatform } from "../../shared/integrations.ts";
import type { MetadataStore } from "../../shared/metadata_store.ts";
import { newId } from "../context.ts";

export interface IntegrationLinkRecord extends IntegrationLink {
  tenant: string;
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
    };
    // The link first, then the claim: a claim never points at a link that was not written.
    await metadata.set(linkKey(tenant, link.id), link);
    if (await metadata.create(ownerKey(platform, externalId), { tenant, id: link.id } satisfies Owner)) {
      return { link, created: true };
    }
    await metadata.delete(linkKey(tenant, link.id));
    const found = await ownerOf(metadata, platform, externalId);
    if (found?.link) {
      if (found.owner.tenant === tenant) return { link: found.link, created: false };
      throw new LinkConflictError(platform, externalId);
    }
    // A claim whose link is gone (a write cut short): take it over.
    if (found) await metadata.delete(ownerKey(platform, externalId));
  }
  throw new Error(`the link of ${platform} ${externalId} keeps changing; try again`);
}

/** The tenant's links, oldest first. */
export async function listLinks(metadata: MetadataStore, tenant: string): Promise<IntegrationLinkRecord[]> {
  const page = await metadata.list<IntegrationLinkRecord>(["integration_links", tenant], { limit: 1000 });
  return page.items.map((i) => i.value).sort((a, b) => a.created_at < b.created_at ? -1 : 1);
}

/** Every tenant's links (the CLI's `list`). */
export async function listAllLinks(metadata: MetadataStore): Promise<IntegrationLinkRecord[]> {
  const out: IntegrationLinkRecord[] = [];
  let cursor: string | undefined;
  do {
    const page = await metadata.list<IntegrationLinkRecord>(["integration_links"], { limit: 1000, cursor });
    out.push(...page.items.map((i) => i.value));
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
  return found?.link ? found.owner.tenant : null;
}
