/**
 * The tenant's account (`GET /v1/account`), its usage ledger (`GET /v1/usage`), the webhook signing secret
 * (`GET /v1/webhooks/default/secret`) and the base models list (`GET /v1/models`).
 *
 * @example
 * ```ts
 * LedgerEntry.parse({ id: "l1", kind: "reserve", amount: -20, balance: 980, job_id: "p_1", operation: "prediction", note: "", created_at: "2025-01-01T00:00:00.000Z" });
 * ```
 */
import { z } from "zod";

export const Account = z.object({
  tenant: z.object({ id: z.string(), name: z.string() }),
  /** Spendable credits (reservations of running jobs already taken off). */
  balance: z.number().int(),
  /** Credits held by accepted jobs that have not finished. */
  reserved: z.number().int().nonnegative(),
  created_at: z.string(),
});

export const LedgerKind = z.enum(["credit", "reserve", "settle", "refund"]);
export type LedgerKind = z.infer<typeof LedgerKind>;

/** One balance change; `amount` is signed (reserve < 0, refund > 0, settle 0: the reservation is kept). */
export const LedgerEntry = z.object({
  id: z.string(),
  kind: LedgerKind,
  amount: z.number().int(),
  /** The balance after this entry. */
  balance: z.number().int(),
  job_id: z.string().nullable(),
  operation: z.string().nullable(),
  note: z.string(),
  created_at: z.string(),
});
export type LedgerEntry = z.infer<typeof LedgerEntry>;

export const Usage = z.object({
  data: z.array(LedgerEntry),
  next: z.string().nullable(),
  /** Sums over this page's entries: charged (settled reservations), refunded, credited. */
  totals: z.object({ charged: z.number().int(), refunded: z.number().int(), credited: z.number().int() }),
});

export const WebhookSecret = z.object({ key: z.string().regex(/^whsec_/) });

export const ModelInfo = z.object({
  id: z.string(),
  family: z.string(),
  resolution: z.number().int(),
  capabilities: z.array(z.string()),
});
export type ModelInfo = z.infer<typeof ModelInfo>;
