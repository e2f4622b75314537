-- Rate limits per connector (issue 17): requests and records per second of
-- each of its tokens; null follows the deployment's default.
ALTER TABLE connectors
    ADD COLUMN requests_per_second integer CHECK (requests_per_second > 0),
    ADD COLUMN records_per_second integer CHECK (records_per_second > 0);

-- Every control-plane change, written in the same transaction as the change.
-- Entries are inserted under one advisory lock held until commit, so they
-- commit in id order and a reader following the cursor sees each once. No
-- foreign key: a deleted connector's history stays.
CREATE TABLE audit_log (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL,
    client_address text,
    connector_id uuid,
    action text NOT NULL,
    changes jsonb NOT NULL
);

CREATE INDEX audit_log_connector ON audit_log (connector_id, id);
