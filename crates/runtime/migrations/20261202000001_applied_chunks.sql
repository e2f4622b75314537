-- The read API remembered stored messages by (stream, stream sequence). A
-- re-created stream (its NATS store lost) numbers its messages from 1 again,
-- so new messages were taken for old ones and dropped; and an idempotent
-- retry after a NATS restart is a new message with a new sequence, so it was
-- stored twice. A message is now remembered by its own identity, the batch
-- and chunk the gateway gave it, which a redelivery and a retry share and no
-- other message has.
--
-- The old rows cannot be carried over (they hold no batch ids): stop every
-- read-API replica before upgrading (on SIGTERM each acks what it stored).
DROP TABLE applied_messages;

CREATE TABLE applied_chunks (
    connector_id uuid NOT NULL,
    batch_id uuid NOT NULL,
    chunk bigint NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connector_id, batch_id, chunk)
);

CREATE INDEX applied_chunks_applied_at ON applied_chunks (applied_at);
