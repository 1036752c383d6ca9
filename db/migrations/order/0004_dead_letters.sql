-- Dead letters under their own claim key (not the event id in the inbox), so that a replayed event is
-- applied; each row keeps the message as consumed for a replay, and records that replay (who, when).
CREATE TABLE "dead_letters" (
	"id" uuid PRIMARY KEY NOT NULL,
	"consumer_group" text NOT NULL,
	"claim_key" text NOT NULL,
	"topic" text NOT NULL,
	"source_topic" text NOT NULL,
	"partition" integer NOT NULL,
	"offset" bigint NOT NULL,
	"event_id" text,
	"message_key" text,
	"headers" jsonb NOT NULL,
	"payload" text,
	"reason" text NOT NULL,
	"error" text NOT NULL,
	"attempts" integer NOT NULL,
	"dead_lettered_at" timestamp with time zone DEFAULT now() NOT NULL,
	"replayed_at" timestamp with time zone,
	"replayed_by" text,
	"replay_outbox_id" uuid,
	CONSTRAINT "dead_letters_claim" UNIQUE("consumer_group","claim_key"),
	CONSTRAINT "dead_letters_reason" CHECK ("dead_letters"."reason" in ('poison', 'retries exhausted')),
	CONSTRAINT "dead_letters_replay" CHECK (("dead_letters"."replayed_at" is null) = ("dead_letters"."replayed_by" is null) and ("dead_letters"."replayed_at" is null) = ("dead_letters"."replay_outbox_id" is null))
);
--> statement-breakpoint
CREATE INDEX "dead_letters_topic_time_idx" ON "dead_letters" USING btree ("topic","dead_lettered_at");