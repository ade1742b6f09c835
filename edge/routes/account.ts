/**
 * `GET /v1/account` (tenant, balance, reservations, the price table), `GET /v1/usage` (the ledger, newest
 * first) and `GET /v1/webhooks/default/secret` (the `whsec_` key webhooks are signed with).
 */
import type { Hono } from "hono";
import { z } from "zod";
import { Account, Usage, WebhookSecret } from "../../shared/account.ts";
import { type EdgeEnv, webhookSecret } from "../context.ts";
import { type OpenApi, route } from "../openapi.ts";
import { PRICES } from "../pricing.ts";

export function accountRoutes(app: Hono<EdgeEnv>, api: OpenApi): void {
  route(app, api, {
    method: "get",
    path: "/v1/account",
    summary: "The tenant, its credit balance and the price table",
    tags: ["account"],
    auth: "api_key",
    responses: {
      200: {
        description: "The account",
        schema: Account.extend({ prices: z.record(z.string(), z.unknown()) }),
      },
    },
  }, async (c) => {
    const tenant = c.get("tenant");
    const { balance, reserved } = await c.get("edge").broker.account(tenant.id);
    return c.json({
      tenant: { id: tenant.id, name: tenant.name },
      balance,
      reserved,
      created_at: tenant.created_at,
      prices: PRICES,
    });
  });

  route(app, api, {
    method: "get",
    path: "/v1/usage",
    summary: "The usage ledger: credits, reservations, settlements and refunds, newest first",
    tags: ["account"],
    auth: "api_key",
    query: {
      cursor: { description: "from a previous page's next" },
      limit: { description: "1..1000, default 50" },
    },
    responses: { 200: { description: "A page of the ledger", schema: Usage } },
  }, async (c) => {
    const limit = Number(c.req.query("limit") ?? 50);
    const page = await c.get("edge").broker.ledger(c.get("tenant").id, {
      cursor: c.req.query("cursor"),
      limit: Number.isFinite(limit) ? limit : 50,
    });
    const data = page.items.map((e) => ({
      id: e.id,
      kind: e.kind,
      amount: e.amount,
      balance: e.balance,
      job_id: e.jobId,
      operation: e.operation,
      note: e.note,
      created_at: new Date(e.createdAt).toISOString(),
    }));
    const sum = (k: string) => data.filter((e) => e.kind === k).reduce((n, e) => n + Math.abs(e.amount), 0);
    // Charged = reservations that were settled: a settle entry names its job's price in its reservation.
    const settled = new Set(data.filter((e) => e.kind === "settle").map((e) => e.job_id));
    const charged = data.filter((e) => e.kind === "reserve" && settled.has(e.job_id)).reduce(
      (n, e) => n - e.amount,
      0,
    );
    return c.json({
      data,
      next: page.next,
      totals: { charged, refunded: sum("refund"), credited: sum("credit") },
    });
  });

  route(app, api, {
    method: "get",
    path: "/v1/webhooks/default/secret",
    summary: "The secret webhooks are signed with (Standard Webhooks)",
    tags: ["webhooks"],
    auth: "api_key",
    responses: { 200: { description: "The signing secret", schema: WebhookSecret } },
  }, async (c) => c.json({ key: await webhookSecret(c.get("edge").metadata, c.get("tenant").id) }));
}
