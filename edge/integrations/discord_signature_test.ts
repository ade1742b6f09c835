import { assert, assertRejects } from "../../gpu-worker/testing.ts";
import { verifyDiscordSignature } from "./discord_signature.ts";
import { SignatureError, toHex } from "./request_signature.ts";

const NOW = 1_700_000_000_000;
const enc = (s: string) => new TextEncoder().encode(s);

async function keypair() {
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, true, [
    "sign",
    "verify",
  ]) as CryptoKeyPair;
  const publicKey = toHex(new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey)));
  const sign = async (timestamp: string, body: string) =>
    toHex(new Uint8Array(await crypto.subtle.sign("Ed25519", pair.privateKey, enc(timestamp + body))));
  return { publicKey, sign };
}

const request = (publicKey: string, signature: string | null, timestamp: string | null, body: string) => ({
  publicKey,
  signature,
  timestamp,
  body: enc(body),
  nowMs: NOW,
});

Deno.test("discord signature: a signed, fresh request verifies", async () => {
  const k = await keypair();
  const ts = String(NOW / 1000 - 10), body = '{"type":1}';
  await verifyDiscordSignature(request(k.publicKey, await k.sign(ts, body), ts, body));
});

Deno.test("discord signature: another body, another key, a missing or malformed header are refused", async () => {
  const k = await keypair(), other = await keypair();
  const ts = String(NOW / 1000), body = '{"type":1}';
  const sig = await k.sign(ts, body);
  const refused = async (r: ReturnType<typeof request>, includes: string) => {
    const e = await assertRejects(() => verifyDiscordSignature(r), SignatureError);
    assert(e.message.includes(includes), e.message);
  };
  await refused(request(k.publicKey, sig, ts, '{"type":2}'), "does not verify");
  await refused(request(other.publicKey, sig, ts, body), "does not verify");
  await refused(request(k.publicKey, sig, String(NOW / 1000 + 1), body), "does not verify");
  await refused(request(k.publicKey, null, ts, body), "missing the X-Signature-Ed25519");
  await refused(request(k.publicKey, sig, null, body), "missing the X-Signature-Timestamp");
  await refused(request(k.publicKey, sig.slice(2), ts, body), "128 hex digits");
  await refused(request(k.publicKey, sig, "soon", body), "unix seconds");
});

Deno.test("discord signature: a timestamp over 5 minutes old (a replay) or ahead is refused", async () => {
  const k = await keypair(), body = '{"type":1}';
  const old = String(NOW / 1000 - 301), ahead = String(NOW / 1000 + 301);
  const e = await assertRejects(
    async () => verifyDiscordSignature(request(k.publicKey, await k.sign(old, body), old, body)),
    SignatureError,
  );
  assert(e.message.includes("301 s old"), e.message);
  await assertRejects(
    async () => verifyDiscordSignature(request(k.publicKey, await k.sign(ahead, body), ahead, body)),
    SignatureError,
  );
  const edge = String(NOW / 1000 - 300);
  await verifyDiscordSignature(request(k.publicKey, await k.sign(edge, body), edge, body));
});
