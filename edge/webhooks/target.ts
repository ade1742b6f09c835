/**
 * Webhook delivery without SSRF: resolve the host once, refuse it when any of its addresses is private,
 * loopback, link-local or otherwise special (`address.ts`), then open the TCP connection to the address that
 * was checked — never resolving again, so a DNS answer that changes between check and connect (rebinding)
 * cannot redirect the request. HTTPS runs TLS over that connection with the URL's host name for SNI and
 * certificate checks. `allowPrivate` (env WEBHOOKS_ALLOW_PRIVATE=1) is for local development only.
 *
 * @example
 * ```ts
 * const target = await resolveWebhookTarget("https://example.com/hook", { allowPrivate: false });
 * const status = await postToTarget(target, JSON.stringify(body), signedHeaders, 10_000);
 * ```
 */
import { blockedReason, isIpLiteral } from "./address.ts";

export type Resolver = (host: string, type: "A" | "AAAA") => Promise<string[]>;
export const dnsResolver: Resolver = (host, type) => Deno.resolveDns(host, type);

export class WebhookTargetError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "WebhookTargetError";
  }
}

export interface WebhookTarget {
  url: URL;
  /** The checked address the connection goes to. */
  address: string;
  port: number;
}

export async function resolveWebhookTarget(
  raw: string,
  opts: { allowPrivate: boolean; resolve?: Resolver },
): Promise<WebhookTarget> {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new WebhookTargetError(`not a URL: ${raw}`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new WebhookTargetError(`only http and https webhooks, got ${url.protocol}`);
  }
  if (url.username || url.password) throw new WebhookTargetError("webhook URLs may not carry credentials");
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
  let addresses: string[];
  if (isIpLiteral(host)) addresses = [host];
  else if (host === "localhost" || host.endsWith(".localhost")) addresses = ["127.0.0.1"];
  else {
    const resolve = opts.resolve ?? dnsResolver;
    const found = await Promise.allSettled([resolve(host, "A"), resolve(host, "AAAA")]);
    addresses = found.flatMap((r) => (r.status === "fulfilled" ? r.value : []));
    if (!addresses.length) throw new WebhookTargetError(`${host} does not resolve`);
  }
  for (const a of addresses) {
    const why = blockedReason(a);
    if (why && !opts.allowPrivate) {
      throw new WebhookTargetError(`${host} resolves to ${a}: ${why}; webhooks only go to public addresses`);
    }
  }
  const port = url.port ? Number(url.port) : url.protocol === "https:" ? 443 : 80;
  const address = addresses.find((a) => !a.includes(":")) ?? addresses[0];
  return { url, address, port };
}

/** POSTs over a connection to `target.address`; returns the response status. */
export async function postToTarget(
  target: WebhookTarget,
  body: string | Uint8Array,
  headers: Record<string, string>,
  timeoutMs: number,
  contentType = "application/json",
): Promise<number> {
  const tcp = await Deno.connect({ hostname: target.address, port: target.port });
  let conn: Deno.Conn = tcp;
  const timer = setTimeout(() => {
    try {
      conn.close();
    } catch { /* already closed */ }
  }, timeoutMs);
  try {
    if (target.url.protocol === "https:") conn = await Deno.startTls(tcp, { hostname: target.url.hostname });
    const payload = typeof body === "string" ? new TextEncoder().encode(body) : body;
    const head = [
      `POST ${target.url.pathname}${target.url.search} HTTP/1.1`,
      `Host: ${target.url.host}`,
      "User-Agent: personalize-webhooks/1",
      `Content-Type: ${contentType.replace(/[\r\n]/g, "")}`,
      `Content-Length: ${payload.byteLength}`,
      "Connection: close",
      ...Object.entries(headers).map(([k, v]) => `${k}: ${v.replace(/[\r\n]/g, "")}`),
      "",
      "",
    ].join("\r\n");
    const req = new Uint8Array([...new TextEncoder().encode(head), ...payload]);
    for (let off = 0; off < req.byteLength;) off += await conn.write(req.subarray(off));
    let seen = "";
    const buf = new Uint8Array(1024);
    while (!seen.includes("\r\n") && seen.length < 8192) {
      const n = await conn.read(buf);
      if (n === null) break;
      seen += new TextDecoder().decode(buf.subarray(0, n));
    }
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(seen);
    if (!m) throw new Error(`no HTTP status line from ${target.url.host} (${target.address})`);
    return Number(m[1]);
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch { /* closed by the timeout */ }
  }
}
