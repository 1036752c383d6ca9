-- Idempotency keys belong to the authenticated subject that sent them: one caller's key must neither
-- replay its response to another caller nor turn another's request into a 422. Rows written before
-- authentication keep the empty subject.
ALTER TABLE "idempotency_keys" ADD COLUMN "subject" text DEFAULT '' NOT NULL;--> statement-breakpoint
ALTER TABLE "idempotency_keys" DROP CONSTRAINT "idempotency_keys_pkey";--> statement-breakpoint
ALTER TABLE "idempotency_keys" ADD CONSTRAINT "idempotency_keys_subject_key_pk" PRIMARY KEY("subject","key");
