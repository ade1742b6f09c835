/**
 * API keys from the command line, in the same store as the server (Deno KV under DATA_DIR):
 *
 *   deno task keys create --tenant NAME [--credits N]
 *
 * prints the new key (once; only its SHA-256 is stored). The tenant is made on first use; credits are added
 * to its balance.
 */
import { parseArgs } from "node:util";
import { KvJobBroker } from "../edge/adapter/deno/kv_job_broker.ts";
import { KvMetadataStore } from "../edge/adapter/deno/kv_metadata_store.ts";
import { issueApiKey } from "../edge/auth/api_keys.ts";

const USAGE = "usage: deno task keys create --tenant NAME [--credits N]";

const { values, positionals } = parseArgs({
  args: Deno.args,
  options: { tenant: { type: "string" }, credits: { type: "string" }, help: { type: "boolean" } },
  allowPositionals: true,
});
if (values.help || positionals[0] !== "create" || !values.tenant) {
  console.error(USAGE);
  Deno.exit(values.help ? 0 : 2);
}
const credits = Number(values.credits ?? 0);
if (!Number.isSafeInteger(credits) || credits < 0) {
  console.error(`--credits must be a non-negative integer, got ${values.credits}\n${USAGE}`);
  Deno.exit(2);
}
const dataDir = Deno.env.get("DATA_DIR") ?? "./data";
await Deno.mkdir(dataDir, { recursive: true });
const kv = await Deno.openKv(`${dataDir}/kv.sqlite3`);
try {
  const { key, tenant, balance } = await issueApiKey(new KvMetadataStore(kv), new KvJobBroker(kv), {
    tenantName: values.tenant,
    credits,
  });
  console.error(`tenant ${tenant.name} (${tenant.id}), balance ${balance} credits; the key is shown once:`);
  console.log(key);
} finally {
  kv.close();
}
