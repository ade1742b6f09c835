/**
 * Where a webhook may go: only public unicast addresses. `blockedReason` names the special-purpose range
 * (RFC 6890 and friends) an address falls in — private, loopback, link-local, shared (CGNAT), "this network",
 * documentation, benchmarking, multicast, reserved — for IPv4 and IPv6, including IPv4 hidden in IPv6
 * (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`); Teredo tunnels
 * are refused whole.
 *
 * @example
 * ```ts
 * blockedReason("10.1.2.3"); // "private (10.0.0.0/8)"
 * blockedReason("::ffff:127.0.0.1"); // "loopback (127.0.0.0/8), IPv4-mapped"
 * blockedReason("93.184.216.34"); // null
 * ```
 */

/** Four octets of a dotted-quad IPv4 address (strict: no leading zeros, no short forms), or null. */
export function parseIPv4(s: string): number[] | null {
  const parts = s.split(".");
  if (parts.length !== 4) return null;
  const out: number[] = [];
  for (const p of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p) || Number(p) > 255) return null;
    out.push(Number(p));
  }
  return out;
}

/** Eight 16-bit groups of an IPv6 address (with `::` and a trailing dotted quad), or null. */
export function parseIPv6(input: string): number[] | null {
  let s = input.startsWith("[") && input.endsWith("]") ? input.slice(1, -1) : input;
  if (s.includes("%")) s = s.slice(0, s.indexOf("%")); // zone id
  if (!/^[0-9a-fA-F:.]+$/.test(s)) return null;
  const tail: number[] = [];
  const lastColon = s.lastIndexOf(":");
  if (s.includes(".")) {
    const v4 = parseIPv4(s.slice(lastColon + 1));
    if (!v4) return null;
    tail.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
    s = s.slice(0, lastColon + 1); // "::ffff:" | "::" | "1:2:3:4:5:6:"
    if (!s.endsWith("::")) s = s.slice(0, -1);
  }
  const halves = s.split("::");
  if (halves.length > 2) return null;
  const groups = (h: string) => (h === "" ? [] : h.split(":"));
  const head = groups(halves[0]), rest = halves.length === 2 ? groups(halves[1]) : [];
  const total = head.length + rest.length + tail.length;
  if (halves.length === 1 ? total !== 8 : total > 7) return null;
  const hex = (g: string) => (/^[0-9a-fA-F]{1,4}$/.test(g) ? parseInt(g, 16) : NaN);
  const out = [...head.map(hex), ...Array(8 - total).fill(0), ...rest.map(hex), ...tail];
  return out.some(Number.isNaN) ? null : out;
}

const V4_BLOCKS: [number[], number, string][] = [
  [[0, 0, 0, 0], 8, "this network (0.0.0.0/8)"],
  [[10, 0, 0, 0], 8, "private (10.0.0.0/8)"],
  [[100, 64, 0, 0], 10, "shared address space (100.64.0.0/10)"],
  [[127, 0, 0, 0], 8, "loopback (127.0.0.0/8)"],
  [[169, 254, 0, 0], 16, "link-local (169.254.0.0/16)"],
  [[172, 16, 0, 0], 12, "private (172.16.0.0/12)"],
  [[192, 0, 0, 0], 24, "IETF protocol assignments (192.0.0.0/24)"],
  [[192, 0, 2, 0], 24, "documentation (192.0.2.0/24)"],
  [[192, 88, 99, 0], 24, "6to4 relay anycast (192.88.99.0/24)"],
  [[192, 168, 0, 0], 16, "private (192.168.0.0/16)"],
  [[198, 18, 0, 0], 15, "benchmarking (198.18.0.0/15)"],
  [[198, 51, 100, 0], 24, "documentation (198.51.100.0/24)"],
  [[203, 0, 113, 0], 24, "documentation (203.0.113.0/24)"],
  [[224, 0, 0, 0], 4, "multicast (224.0.0.0/4)"],
  [[240, 0, 0, 0], 4, "reserved (240.0.0.0/4, incl. broadcast)"],
];

const v4Int = (o: number[]) => ((o[0] << 24) | (o[1] << 16) | (o[2] << 8) | o[3]) >>> 0;
const inV4 = (ip: number, net: number[], bits: number) =>
  bits === 0 || (ip >>> (32 - bits)) === (v4Int(net) >>> (32 - bits));

function v4Reason(o: number[]): string | null {
  const ip = v4Int(o);
  for (const [net, bits, why] of V4_BLOCKS) if (inV4(ip, net, bits)) return why;
  return null;
}

/** Does `g` (8 groups) start with the `bits`-bit prefix `p` (groups)? */
function inV6(g: number[], p: number[], bits: number): boolean {
  for (let i = 0; i < 8 && bits > 0; i++, bits -= 16) {
    const take = Math.min(16, bits);
    const mask = (0xffff << (16 - take)) & 0xffff;
    if ((g[i] & mask) !== ((p[i] ?? 0) & mask)) return false;
  }
  return true;
}

const embedded = (hi: number, lo: number) => [hi >> 8, hi & 0xff, lo >> 8, lo & 0xff];

function v6Reason(g: number[]): string | null {
  if (g.every((x) => x === 0)) return "unspecified (::)";
  if (g.slice(0, 7).every((x) => x === 0) && g[7] === 1) return "loopback (::1)";
  const v4 = (o: number[], how: string) => {
    const r = v4Reason(o);
    return r ? `${r}, ${how}` : null;
  };
  if (inV6(g, [0, 0, 0, 0, 0, 0xffff], 96)) return v4(embedded(g[6], g[7]), "IPv4-mapped");
  if (inV6(g, [0, 0, 0, 0, 0, 0], 96)) return "IPv4-compatible (::/96, deprecated)";
  if (inV6(g, [0, 0, 0, 0, 0xffff, 0], 96)) return "IPv4-translated (::ffff:0:0:0/96)";
  if (inV6(g, [0x64, 0xff9b], 96)) return v4(embedded(g[6], g[7]), "NAT64");
  if (inV6(g, [0x64, 0xff9b, 1], 48)) return "local-use NAT64 (64:ff9b:1::/48)";
  if (inV6(g, [0x100], 64)) return "discard-only (100::/64)";
  if (inV6(g, [0x2001, 0], 32)) return "Teredo tunnel (2001::/32)";
  if (inV6(g, [0x2001, 0x2], 48)) return "benchmarking (2001:2::/48)";
  if (inV6(g, [0x2001, 0xdb8], 32)) return "documentation (2001:db8::/32)";
  if (inV6(g, [0x2001, 0x10], 28)) return "ORCHID (2001:10::/28)";
  if (inV6(g, [0x2002], 16)) return v4(embedded(g[1], g[2]), "6to4");
  if (inV6(g, [0x3fff], 20)) return "documentation (3fff::/20)";
  if (inV6(g, [0xfc00], 7)) return "unique local (fc00::/7)";
  if (inV6(g, [0xfe80], 10)) return "link-local (fe80::/10)";
  if (inV6(g, [0xfec0], 10)) return "site-local (fec0::/10, deprecated)";
  if (inV6(g, [0xff00], 8)) return "multicast (ff00::/8)";
  return null;
}

/** Why an address may not receive webhooks, or null when it is public. Unparseable input is blocked. */
export function blockedReason(address: string): string | null {
  const v4 = parseIPv4(address);
  if (v4) return v4Reason(v4);
  const v6 = parseIPv6(address);
  if (v6) return v6Reason(v6);
  return `not an IP address: "${address}"`;
}

export const isIpLiteral = (host: string): boolean => parseIPv4(host) !== null || parseIPv6(host) !== null;
