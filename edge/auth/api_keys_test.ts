import { assert, assertEquals } from "../../gpu-worker/testing.ts";
import { MemoryJobBroker } from "../adapter/memory/job_broker.ts";
import { MemoryMetadataStore } from "../adapter/memory/metadata_store.ts";
import {
  authenticate,
  crc32,
  generateApiKey,
  issueApiKey,
  isWellFormedApiKey,
  timingSafeEqual,
} from "./api_keys.ts";

Deno.test("crc32 matches zlib's check value", () => {
  assertEquals(crc32(new TextEncoder().encode("123456789")), 0xcbf43926);
});

Deno.test("api keys: shape pfd_<32>_<6>, checksum refuses typos and truncation", () => {
  const key = generateApiKey();
  assert(/^pfd_[0-9A-Za-z]{32}_[0-9A-Za-z]{6}$/.test(key), key);
  assert(isWellFormedApiKey(key));
  const typo = key.slice(0, 10) + (key[10] === "a" ? "b" : "a") + key.slice(11);
  assert(!isWellFormedApiKey(typo), "one changed character fails the checksum");
  assert(!isWellFormedApiKey(key.slice(0, -1)));
  assert(!isWellFormedApiKey(`sk_${key.slice(4)}`));
  assert(generateApiKey() !== key);
});

Deno.test("timingSafeEqual", () => {
  assert(timingSafeEqual("abc", "abc"));
  assert(!timingSafeEqual("abc", "abd"));
  assert(!timingSafeEqual("abc", "ab"));
});

Deno.test("issued keys authenticate their tenant; only the hash is stored", async () => {
  const metadata = new MemoryMetadataStore();
  const broker = new MemoryJobBroker();
  const a = await issueApiKey(metadata, broker, { tenantName: "acme", credits: 500 });
  const b = await issueApiKey(metadata, broker, { tenantName: "acme" });
  assertEquals(a.tenant.id, b.tenant.id);
  assertEquals([a.balance, b.balance], [500, 500]);
  assertEquals((await authenticate(metadata, a.key))?.name, "acme");
  assertEquals(await authenticate(metadata, generateApiKey()), null);
  const stored = await metadata.list(["api_keys"]);
  assertEquals(stored.items.length, 2);
  assert(!JSON.stringify(stored).includes(a.key.slice(4, 36)), "the key itself is not stored");
});
