-- Connectors and their definitions. The records of each connector live in a
-- table of their own, records_<id without dashes>, built by sluice-runtime's
-- store module.
CREATE TABLE connectors (
    id uuid PRIMARY KEY,
    name text NOT NULL UNIQUE,
    description text,
    -- sluice_schema::Schema as JSON: fields with their stable ids.
    schema jsonb NOT NULL,
    schema_version bigint NOT NULL,
    extra_fields text NOT NULL,
    write_token_hash text NOT NULL,
    read_token_hash text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Kept by the read API in the same transaction as the rows it stores. The row
-- is also the per-connector lock under which _id values are allocated, so
-- the writes of one connector commit in _id order.
CREATE TABLE connector_stats (
    connector_id uuid PRIMARY KEY REFERENCES connectors (id) ON DELETE CASCADE,
    last_record_id bigint NOT NULL DEFAULT 0,
    last_rejected_id bigint NOT NULL DEFAULT 0,
    records bigint NOT NULL DEFAULT 0,
    rejected bigint NOT NULL DEFAULT 0,
    last_received_at timestamptz
);

CREATE TABLE rejected_records (
    connector_id uuid NOT NULL REFERENCES connectors (id) ON DELETE CASCADE,
    id bigint NOT NULL,
    received_at timestamptz NOT NULL,
    record jsonb NOT NULL,
    errors jsonb NOT NULL,
    PRIMARY KEY (connector_id, id)
);

-- Stream messages already stored, recorded in the same transaction as their
-- rows, so a redelivered message is acknowledged without storing it twice.
CREATE TABLE applied_messages (
    stream text NOT NULL,
    sequence bigint NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, sequence)
);
