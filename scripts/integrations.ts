/**
 * Chat links from the command line, in the same store as the server (Deno KV under DATA_DIR), as
 * `POST/GET/DELETE /v1/integrations/links` do with a tenant's key, except that the operator's `link` is
 * active at once (a tenant's request waits for the place to send its code back):
 *
 *   deno task integrations link --platform discord|slack --external-id ID --tenant NAME_OR_ID
 *   deno task integrations unlink --platform discord|slack --external-id ID
 *   deno task integrations list [--tenant NAME_OR_ID]
 *
 * A Discord guild (or a user, for DMs) or a Slack team is linked to one tenant, whose credits pay for the
 * `/imagine` commands run there. The tenant must exist (`deno task keys create --tenant NAME` makes one).
 */
import { parseArgs } from "node:util";
import { KvMetadataStore } from "../edge/adapter/deno/kv_metadata_store.ts";
import type { Tenant } from "../edge/auth/api_keys.ts";
import {
  createLink,
  deleteLink,
  LinkConflictError,
  linkedTenant,
  listAllLinks,
  listLinks,
} from "../edge/integrations/links.ts";
import { ExternalId, INTEGRATION_PLATFORMS, IntegrationPlatform } from "../shared/integrations.ts";
import type { MetadataStore } from "../shared/metadata_store.ts";

const USAGE =
  `usage: deno task integrations link --platform discord|slack --external-id ID --tenant NAME_OR_ID
       deno task integrations unlink --platform discord|slack --external-id ID
       deno task integrations list [--tenant NAME_OR_ID]`;

function fail(message: string): never {
  console.error(`${message}\n${USAGE}`);
  Deno.exit(2);
}

const { values, positionals } = parseArgs({
  args: Deno.args,
  options: {
    platform: { type: "string" },
    "external-id": { type: "string" },
    tenant: { type: "string" },
    help: { type: "boolean" },
  },
  allowPositionals: true,
});
const command = positionals[0];
if (values.help) {
  console.log(USAGE);
  Deno.exit(0);
}
if (!["link", "unlink", "list"].includes(command ?? "")) {
  fail(`expected a command link, unlink or list, got ${command ? `"${command}"` : "none"}`);
}

function place(): { platform: IntegrationPlatform; externalId: string } {
  const platform = IntegrationPlatform.safeParse(values.platform);
  if (!platform.success) {
    fail(`--platform must be one of ${INTEGRATION_PLATFORMS.join(", ")}, got ${values.platform ?? "none"}`);
  }
  const id = ExternalId.safeParse(values["external-id"]);
  if (!id.success) {
    fail(`--external-id: ${id.error.issues[0].message}, got ${values["external-id"] ?? "none"}`);
  }
  return { platform: platform.data, externalId: id.data };
}

/** A tenant by id (`tnt_...`) or name; never made here. */
async function tenantOf(metadata: MetadataStore, ref: string): Promise<Tenant> {
  const id = ref.startsWith("tnt_") ? ref : await metadata.get<string>(["tenant_names", ref]);
  const tenant = id ? await metadata.get<Tenant>(["tenants", id]) : null;
  if (!tenant) {
    console.error(`no tenant "${ref}" in ${dataDir} (make one with: deno task keys create --tenant ${ref})`);
    Deno.exit(1);
  }
  return tenant;
}

const dataDir = Deno.env.get("DATA_DIR") ?? "./data";
await Deno.mkdir(dataDir, { recursive: true });
const kv = await Deno.openKv(`${dataDir}/kv.sqlite3`);
const metadata = new KvMetadataStore(kv);
try {
  if (command === "link") {
    const { platform, externalId } = place();
    if (!values.tenant) fail("link needs --tenant NAME_OR_ID");
    const tenant = await tenantOf(metadata, values.tenant);
    try {
      const { link, created } = await createLink(metadata, tenant.id, platform, externalId);
      console.error(
        `${platform} ${externalId} ${
          created ? "linked" : "was linked already"
        } to ${tenant.name} (${tenant.id})`,
      );
      console.log(link.id);
    } catch (e) {
      if (!(e instanceof LinkConflictError)) throw e;
      const holder = await linkedTenant(metadata, platform, externalId);
      console.error(`${e.message} (${holder})`);
      Deno.exit(1);
    }
  } else if (command === "unlink") {
    const { platform, externalId } = place();
    const holder = await linkedTenant(metadata, platform, externalId);
    const link = holder
      ? (await listLinks(metadata, holder)).find((l) =>
        l.platform === platform && l.external_id === externalId
      )
      : undefined;
    if (!holder || !link) {
      console.error(`${platform} ${externalId} is not linked`);
      Deno.exit(1);
    }
    await deleteLink(metadata, holder, link.id);
    console.error(`${platform} ${externalId} unlinked from ${holder}`);
  } else {
    const links = values.tenant
      ? await listLinks(metadata, (await tenantOf(metadata, values.tenant)).id)
      : await listAllLinks(metadata);
    for (const l of links) console.log([l.id, l.platform, l.external_id, l.tenant, l.created_at].join("\t"));
    if (!links.length) console.error("no links");
  }
} finally {
  kv.close();
}
