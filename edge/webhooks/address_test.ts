import { assert, assertEquals } from "../../gpu-worker/testing.ts";
import { blockedReason, parseIPv4, parseIPv6 } from "./address.ts";
import { resolveWebhookTarget, WebhookTargetError } from "./target.ts";
import { assertRejects } from "../../gpu-worker/testing.ts";

Deno.test("IPv4 parsing is strict", () => {
  assertEquals(parseIPv4("192.168.1.20"), [192, 168, 1, 20]);
  for (const s of ["1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "0x7f.0.0.1", "1.2.3.-4", "", "a.b.c.d"]) {
    assertEquals(parseIPv4(s), null, s);
  }
});

Deno.test("IPv6 parsing: compression, embedded IPv4, zones, brackets", () => {
  const hex = (s: string) => parseIPv6(s)?.map((g) => g.toString(16)).join(":");
  assertEquals(hex("::1"), "0:0:0:0:0:0:0:1");
  assertEquals(hex("::"), "0:0:0:0:0:0:0:0");
  assertEquals(hex("2001:db8::8a2e:370:7334"), "2001:db8:0:0:0:8a2e:370:7334");
  assertEquals(hex("::ffff:10.0.0.1"), "0:0:0:0:0:ffff:a00:1");
  assertEquals(hex("1:2:3:4:5:6:1.2.3.4"), "1:2:3:4:5:6:102:304");
  assertEquals(hex("fe80::1%eth0"), "fe80:0:0:0:0:0:0:1");
  assertEquals(hex("[::1]"), "0:0:0:0:0:0:0:1");
  assertEquals(hex("1:2:3:4:5:6:7:8"), "1:2:3:4:5:6:7:8");
  for (const s of ["1:2:3:4:5:6:7:8:9", ":::", "1::2::3", "12345::", "::g", "1:2:3:4:5:6:7", "::1.2.3"]) {
    assertEquals(parseIPv6(s), null, s);
  }
});

Deno.test("blocked IPv4 ranges: private, loopback, link-local, CGNAT, this-network and other special ones", () => {
  const blocked: [string, string][] = [
    ["10.0.0.1", "private"],
    ["10.255.255.255", "private"],
    ["172.16.0.1", "private"],
    ["172.31.255.255", "private"],
    ["192.168.0.1", "private"],
    ["192.168.255.254", "private"],
    ["127.0.0.1", "loopback"],
    ["127.255.0.9", "loopback"],
    ["169.254.169.254", "link-local"],
    ["169.254.0.1", "link-local"],
    ["100.64.0.1", "shared"],
    ["100.127.255.255", "shared"],
    ["0.0.0.0", "this network"],
    ["0.1.2.3", "this network"],
    ["192.0.0.8", "IETF"],
    ["192.0.2.1", "documentation"],
    ["198.51.100.7", "documentation"],
    ["203.0.113.9", "documentation"],
    ["198.18.0.1", "benchmarking"],
    ["198.19.255.1", "benchmarking"],
    ["224.0.0.1", "multicast"],
    ["239.255.255.250", "multicast"],
    ["240.0.0.1", "reserved"],
    ["255.255.255.255", "reserved"],
    ["192.88.99.1", "6to4"],
  ];
  for (const [ip, why] of blocked) assert(blockedReason(ip)?.includes(why), `${ip}: ${blockedReason(ip)}`);
  for (
    const ip of [
      "8.8.8.8",
      "1.1.1.1",
      "172.15.255.255",
      "172.32.0.0",
      "100.63.255.255",
      "100.128.0.0",
      "169.253.255.255",
      "11.0.0.0",
      "93.184.216.34",
      "192.169.0.1",
      "223.255.255.255",
    ]
  ) {
    assertEquals(blockedReason(ip), null, ip);
  }
});

Deno.test("blocked IPv6 ranges, including IPv4 hidden in IPv6", () => {
  const blocked: [string, string][] = [
    ["::1", "loopback"],
    ["::", "unspecified"],
    ["fc00::1", "unique local"],
    ["fd12:3456::1", "unique local"],
    ["fdff:ffff::", "unique local"],
    ["fe80::1", "link-local"],
    ["febf::1", "link-local"],
    ["fec0::1", "site-local"],
    ["ff02::1", "multicast"],
    ["2001:db8::1", "documentation"],
    ["2001::1", "Teredo"],
    ["::ffff:127.0.0.1", "loopback"],
    ["::ffff:7f00:1", "loopback"],
    ["::ffff:10.1.2.3", "private"],
    ["::ffff:169.254.169.254", "link-local"],
    ["::ffff:0:0", "this network"],
    ["::127.0.0.1", "IPv4-compatible"],
    ["64:ff9b::192.168.1.1", "private"],
    ["64:ff9b::7f00:1", "loopback"],
    ["2002:a00:1::", "private"],
    ["2002:7f00:1::1", "loopback"],
    ["100::1", "discard"],
  ];
  for (const [ip, why] of blocked) assert(blockedReason(ip)?.includes(why), `${ip}: ${blockedReason(ip)}`);
  for (
    const ip of [
      "2606:4700:4700::1111",
      "2a00:1450:4001::200e",
      "::ffff:8.8.8.8",
      "64:ff9b::808:808",
      "2002:808:808::1",
      "fbff::1",
      "fe7f::1",
    ]
  ) {
    assertEquals(blockedReason(ip), null, ip);
  }
  assert(blockedReason("not-an-ip")?.includes("not an IP"));
});

Deno.test("targets: every resolved address is checked; one private answer refuses the host", async () => {
  const dns = (answers: Record<string, string[]>) => (host: string, type: "A" | "AAAA") =>
    Promise.resolve(answers[`${host}/${type}`] ?? []);
  const ok = await resolveWebhookTarget("https://hooks.example.com/x?y=1", {
    allowPrivate: false,
    resolve: dns({
      "hooks.example.com/A": ["93.184.216.34"],
      "hooks.example.com/AAAA": ["2606:2800:220:1::1"],
    }),
  });
  assertEquals([ok.address, ok.port, ok.url.pathname], ["93.184.216.34", 443, "/x"]);
  const mixed = dns({ "evil.example/A": ["93.184.216.34"], "evil.example/AAAA": ["::1"] });
  const e = await assertRejects(
    () => resolveWebhookTarget("http://evil.example/", { allowPrivate: false, resolve: mixed }),
    WebhookTargetError,
  );
  assert(e.message.includes("::1") && e.message.includes("loopback"), e.message);
  for (
    const url of [
      "http://127.0.0.1:8080/",
      "http://[::1]/",
      "http://localhost/",
      "http://0x7f.1/",
      "http://2130706433/",
      "http://169.254.169.254/latest/meta-data",
      "http://[::ffff:10.0.0.1]/",
      "http://app.localhost/",
    ]
  ) {
    await assertRejects(
      () => resolveWebhookTarget(url, { allowPrivate: false, resolve: dns({}) }),
      WebhookTargetError,
      undefined,
    );
  }
  await assertRejects(
    () => resolveWebhookTarget("ftp://example.com/", { allowPrivate: false }),
    WebhookTargetError,
    "http",
  );
  await assertRejects(
    () => resolveWebhookTarget("http://u:p@example.com/", { allowPrivate: false }),
    WebhookTargetError,
    "credentials",
  );
  await assertRejects(
    () => resolveWebhookTarget("http://nx.example/", { allowPrivate: false, resolve: dns({}) }),
    WebhookTargetError,
    "resolve",
  );
  const dev = await resolveWebhookTarget("http://localhost:9000/hook", {
    allowPrivate: true,
    resolve: dns({}),
  });
  assertEquals([dev.address, dev.port], ["127.0.0.1", 9000]);
});
