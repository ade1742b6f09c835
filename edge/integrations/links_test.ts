import { assert, assertEquals, assertRejects } from "../../gpu-worker/testing.ts";
import { MemoryMetadataStore } from "../adapter/memory/metadata_store.ts";
import { createLink, deleteLink, LinkConflictError, linkedTenant, listAllLinks, listLinks } from "./links.ts";

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
