import { assert, assertEquals, assertRejects } from "../../gpu-worker/testing.ts";
import { MemoryMetadataStore } from "../adapter/memory/metadata_store.ts";
import {
  confirmLink,
  createLink,
  deleteLink,
  LINK_CODE_TTL_MS,
  LinkCodeError,
  LinkConflictError,
  linkedTenant,
  listAllLinks,
  listLinks,
  requestLink,
} from "./links.ts";

Deno.test("links: a place links to one tenant; again is the same link, another tenant is a conflict", async () => {
  const m = new MemoryMetadataStore();
  const a = await createLink(m, "tnt_a", "discord", "111");
  assert(a.created && a.link.id.startsWith("lnk_"), JSON.stringify(a));
  const again = await createLink(m, "tnt_a", "discord", "111");
  assertEquals([again.created, again.link.id], [false, a.link.id]);
  const e = await assertRejects(() => createLink(m, "tnt_b", "discord", "111"), LinkConflictError);
  assert(e.message.includes("discord 111"), e.message);
  // The same id on the other platform is another place.
  await createLink(m, "tnt_b", "slack", "111");
  assertEquals(await linkedTenant(m, "discord", "111"), "tnt_a");
  assertEquals(await linkedTenant(m, "slack", "111"), "tnt_b");
  assertEquals(await linkedTenant(m, "slack", "222"), null);
  assertEquals((await listLinks(m, "tnt_a")).map((l) => l.external_id), ["111"]);
  assertEquals((await listAllLinks(m)).length, 2);
});

Deno.test("links: only the owner unlinks; then another tenant may link the place", async () => {
  const m = new MemoryMetadataStore();
  const { link } = await createLink(m, "tnt_a", "slack", "T1");
  assertEquals(await deleteLink(m, "tnt_b", link.id), false);
  assertEquals(await linkedTenant(m, "slack", "T1"), "tnt_a");
  assertEquals(await deleteLink(m, "tnt_a", link.id), true);
  assertEquals(await linkedTenant(m, "slack", "T1"), null);
  assertEquals((await listLinks(m, "tnt_a")).length, 0);
  assert((await createLink(m, "tnt_b", "slack", "T1")).created);
  assertEquals(await linkedTenant(m, "slack", "T1"), "tnt_b");
});

Deno.test("links: concurrent links of one place by two tenants: exactly one wins", async () => {
  const m = new MemoryMetadataStore();
  const results = await Promise.allSettled([
    createLink(m, "tnt_a", "discord", "999"),
    createLink(m, "tnt_b", "discord", "999"),
  ]);
  assertEquals(results.filter((r) => r.status === "fulfilled").length, 1);
  const winner = await linkedTenant(m, "discord", "999");
  assertEquals((await listAllLinks(m)).map((l) => l.tenant), [winner]);
});

Deno.test("links: a tenant's request is pending until its code comes back from the place", async () => {
  const m = new MemoryMetadataStore();
  const t0 = Date.parse("2026-12-07T12:00:00Z");
  const { link, created } = await requestLink(m, "tnt_a", "discord", "G7", t0);
  assert(created && link.status === "pending" && /^[A-Z2-9]{10}$/.test(link.code!), JSON.stringify(link));
  assertEquals(link.expires_at, "2026-12-07T13:00:00.000Z");
  assertEquals(await linkedTenant(m, "discord", "G7"), null, "a pending link pays for nothing");
  // Neither a wrong code nor the right code from another place confirms it.
  await assertRejects(() => confirmLink(m, "discord", "G7", "AAAAAAAAAA", t0), LinkCodeError, "not known");
  await assertRejects(() => confirmLink(m, "discord", "G8", link.code!, t0), LinkCodeError, "another place");
  await assertRejects(() => confirmLink(m, "slack", "G7", link.code!, t0), LinkCodeError, "another place");
  // Another tenant may ask too (nobody holds the place yet); the first confirmed wins.
  const b = await requestLink(m, "tnt_b", "discord", "G7", t0);
  const done = await confirmLink(m, "discord", "G7", ` ${link.code!.toLowerCase()} `, t0 + 1000);
  assertEquals([done.id, done.status, done.tenant], [link.id, "active", "tnt_a"]);
  assertEquals(await linkedTenant(m, "discord", "G7"), "tnt_a");
  await assertRejects(() => confirmLink(m, "discord", "G7", link.code!, t0), LinkCodeError, "not known");
  await assertRejects(() => confirmLink(m, "discord", "G7", b.link.code!, t0), LinkConflictError);
  await assertRejects(() => requestLink(m, "tnt_b", "discord", "G7", t0), LinkConflictError);
  const again = await requestLink(m, "tnt_a", "discord", "G7", t0);
  assertEquals([again.created, again.link.id, again.link.status], [false, link.id, "active"]);
  assertEquals((await listLinks(m, "tnt_a")).map((l) => [l.id, l.status]), [[link.id, "active"]]);
});

Deno.test("links: a code expires after an hour; asking again replaces the pending code", async () => {
  const m = new MemoryMetadataStore();
  const t0 = 1_000_000;
  const first = await requestLink(m, "tnt_a", "slack", "T9", t0);
  const second = await requestLink(m, "tnt_a", "slack", "T9", t0);
  assertEquals((await listLinks(m, "tnt_a")).map((l) => l.id), [second.link.id]);
  await assertRejects(() => confirmLink(m, "slack", "T9", first.link.code!, t0), LinkCodeError, "not known");
  await assertRejects(
    () => confirmLink(m, "slack", "T9", second.link.code!, t0 + LINK_CODE_TTL_MS + 1),
    LinkCodeError,
    "expired",
  );
  assertEquals(await listLinks(m, "tnt_a"), [], "an expired pending link is dropped");
  const third = await requestLink(m, "tnt_a", "slack", "T9", t0);
  assertEquals(
    (await confirmLink(m, "slack", "T9", third.link.code!, t0 + LINK_CODE_TTL_MS)).status,
    "active",
  );
});
