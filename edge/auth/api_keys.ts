/**
 * API keys: `pfd_<32 base62 random>_<6 base62 CRC32 of the rest>` (GitHub's scheme: a typo or a truncated
 * paste is refused by its checksum before any lookup, and secret scanners can match the shape). A key is
 * shown once; only its SHA-256 is stored, and looked-up hashes are compared in constant time.
 *
 * @example
 * ```ts
 * const key = generateApiKey();
 * isWellFormedApiKey(key); // true
 * const { tenant } = await issueApiKey(metadata, broker, { tenantName: "acme", credits: 1000 });
 * ```
 */
import { sha256Hex } from "../../shared/blob_store.ts";
import type { JobBroker } from "../../shared/job_broker.ts";
import type { MetadataStore } from "../../shared/metadata_store.ts";

const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const RANDOM_CHARS = 32;
const KEY_SHAPE = /^pfd_([0-9A-Za-z]{32})_([0-9A-Za-z]{6})$/;

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 (IEEE 802.3, as zlib's `crc32`). */
export function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function base62(n: number, width: number): string {
  let s = "";
  for (let i = 0; i < width; i++) {
    s = BASE62[n % 62] + s;
    n = Math.floor(n / 62);
  }
  return s;
}

function randomBase62(n: number): string {
  let s = "";
  while (s.length < n) {
    // Rejection sampling keeps every character equally likely (256 is not a multiple of 62).
    for (const b of crypto.getRandomValues(new Uint8Array(n * 2))) {
      if (b < 248 && s.length < n) s += BASE62[b % 62];
    }
  }
  return s;
}

function checksum(body: string): string {
  return base62(crc32(new TextEncoder().encode(body)), 6);
}

export function generateApiKey(): string {
  const body = `pfd_${randomBase62(RANDOM_CHARS)}`;
  return `${body}_${checksum(body)}`;
}

/** Shape and checksum only; says nothing about whether the key exists. */
export function isWellFormedApiKey(key: string): boolean {
  const m = KEY_SHAPE.exec(key);
  return m !== null && checksum(`pfd_${m[1]}`) === m[2];
}

export const hashApiKey = (key: string): Promise<string> => sha256Hex(key);

/** Constant-time equality of two strings of equal length (false at once for different lengths). */
export function timingSafeEqual(a: string, b: string): boolean {
  const x = new TextEncoder().encode(a), y = new TextEncoder().encode(b);
  if (x.byteLength !== y.byteLength) return false;
  let diff = 0;
  for (let i = 0; i < x.byteLength; i++) diff |= x[i] ^ y[i];
  return diff === 0;
}

export interface Tenant {
  id: string;
  name: string;
  created_at: string;
}

export interface ApiKeyRecord {
  hash: string;
  tenant: string;
  /** The first characters, to recognize a key in lists without revealing it. */
  prefix: string;
  created_at: string;
}

/** The tenant a key belongs to, or null (malformed, unknown or revoked). */
export async function authenticate(metadata: MetadataStore, key: string): Promise<Tenant | null> {
  if (!isWellFormedApiKey(key)) return null;
  const hash = await hashApiKey(key);
  const rec = await metadata.get<ApiKeyRecord>(["api_keys", hash]);
  if (!rec || !timingSafeEqual(rec.hash, hash)) return null;
  return await metadata.get<Tenant>(["tenants", rec.tenant]);
}

/** The tenant named `name`, made on first use. */
export async function tenantNamed(metadata: MetadataStore, name: string): Promise<Tenant> {
  const id = await metadata.get<string>(["tenant_names", name]);
  if (id) {
    const t = await metadata.get<Tenant>(["tenants", id]);
    if (t) return t;
  }
  const tenant: Tenant = { id: `tnt_${randomBase62(16)}`, name, created_at: new Date().toISOString() };
  if (!(await metadata.create(["tenant_names", name], tenant.id))) return tenantNamed(metadata, name);
  await metadata.set(["tenants", tenant.id], tenant);
  return tenant;
}

/** Makes a key for a tenant (made on first use) and adds credits; the key is returned once, never stored. */
export async function issueApiKey(
  metadata: MetadataStore,
  broker: JobBroker,
  opts: { tenantName: string; credits?: number },
): Promise<{ key: string; tenant: Tenant; balance: number }> {
  const tenant = await tenantNamed(metadata, opts.tenantName);
  const key = generateApiKey();
  const hash = await hashApiKey(key);
  const rec: ApiKeyRecord = {
    hash,
    tenant: tenant.id,
    prefix: key.slice(0, 10),
    created_at: new Date().toISOString(),
  };
  await metadata.set(["api_keys", hash], rec);
  const credits = opts.credits ?? 0;
  const balance = credits
    ? await broker.credit(tenant.id, credits, `credits added with a new key (${rec.prefix}...)`)
    : (await broker.account(tenant.id)).balance;
  return { key, tenant, balance };
}
