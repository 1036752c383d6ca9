import { z } from "zod";
import { amount, balance } from "./events.ts";

export const CreateUserRequest = z.object({
  username: z
    .string()
    .trim()
    .min(1)
    .max(64)
    // PostgreSQL text cannot hold NUL, and no name needs a control character.
    .refine((s) => [...s].every((c) => c >= " " && c !== "\u007f"), "must not contain control characters"),
  initialBalance: balance,
});
export type CreateUserRequest = z.infer<typeof CreateUserRequest>;

export const CreateOrderRequest = z.object({
  userId: z.uuid(),
  amount,
});
export type CreateOrderRequest = z.infer<typeof CreateOrderRequest>;

export const OrderStatus = z.enum(["PENDING", "CONFIRMED", "CANCELED"]);
export type OrderStatus = z.infer<typeof OrderStatus>;

export type User = { id: string; username: string; balance: number; createdAt: string };
export type Order = { id: string; userId: string; amount: number; status: OrderStatus; createdAt: string };
export type UserOrders = { user: User; orders: Order[] };

export const IdParam = z.uuid();

/** The one JSON error shape every process answers with. */
export type ErrorBody = { error: string; requestId?: string };

export const IDEMPOTENCY_KEY_HEADER = "idempotency-key";
export const REQUEST_ID_HEADER = "x-request-id";

/**
 * The identity the gateway verified, forwarded to the services: the token's subject (a user id, or an
 * admin's id) and its role. The gateway removes both from every incoming request before it sets them.
 */
export const SUBJECT_HEADER = "x-auth-subject";
export const ROLE_HEADER = "x-auth-role";
/** The gateway's internal credential, without which a service refuses its API (DESIGN: internal surfaces). */
export const INTERNAL_CREDENTIAL_HEADER = "x-internal-credential";
