-- Wakes `GET /orders/:id` requests that wait with `Prefer: wait=N` (services/order-service/src/order-waits.ts)
-- on every order-service instance, whichever instance or consumer changed the order. A statement-level
-- trigger, so a consumer batch that decides many orders in one UPDATE sends one notification, not one per
-- order; PostgreSQL delivers it only if and when the transaction commits.
-- Payload: `<order id>:<new status>` lines, split into several notifications below the 8000-byte limit.
-- https://www.postgresql.org/docs/current/sql-notify.html
CREATE FUNCTION notify_order_decided() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
	payload text := '';
	line text;
BEGIN
	FOR line IN
		SELECT n.id::text || ':' || n.status
		FROM new_orders n JOIN old_orders o ON o.id = n.id
		WHERE o.status = 'PENDING' AND n.status <> 'PENDING'
	LOOP
		IF length(payload) > 7900 THEN
			PERFORM pg_notify('order_decided', payload);
			payload := '';
		END IF;
		payload := payload || CASE WHEN payload = '' THEN '' ELSE E'\n' END || line;
	END LOOP;
	IF payload <> '' THEN
		PERFORM pg_notify('order_decided', payload);
	END IF;
	RETURN NULL;
END
$$;
--> statement-breakpoint
CREATE TRIGGER orders_decided_notify
	AFTER UPDATE ON orders
	REFERENCING OLD TABLE AS old_orders NEW TABLE AS new_orders
	FOR EACH STATEMENT EXECUTE FUNCTION notify_order_decided();
