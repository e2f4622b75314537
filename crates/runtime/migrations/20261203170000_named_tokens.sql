-- Named tokens (issue 17): a connector has any number of write and read
-- tokens, each with a name and an optional expiry; the operator has tokens
-- of the same kind besides SLUICE_ADMIN_TOKEN. Only SHA-256 hashes are
-- stored, as before.
CREATE TABLE connector_tokens (
    id uuid PRIMARY KEY,
    connector_id uuid NOT NULL REFERENCES connectors (id) ON DELETE CASCADE,
    name text NOT NULL,
    scope text NOT NULL CHECK (scope IN ('write', 'read')),
    hash text NOT NULL UNIQUE,
    -- The token POST /v1/connectors/{id}/tokens/{scope} replaces: the one
    -- made with the connector or by the latest rotation. At most one per
    -- scope.
    rotatable boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    last_used_at timestamptz
);
CREATE UNIQUE INDEX connector_tokens_rotatable ON connector_tokens (connector_id, scope)
    WHERE rotatable;
CREATE INDEX connector_tokens_connector ON connector_tokens (connector_id, created_at);

-- Each connector's write and read token become its two rotatable tokens,
-- with their hashes, so they keep working.
INSERT INTO connector_tokens (id, connector_id, name, scope, hash, rotatable, created_at)
SELECT gen_random_uuid(), id, 'write', 'write', write_token_hash, true, created_at FROM connectors
UNION ALL
SELECT gen_random_uuid(), id, 'read', 'read', read_token_hash, true, created_at FROM connectors;

ALTER TABLE connectors DROP COLUMN write_token_hash, DROP COLUMN read_token_hash;

CREATE TABLE operator_tokens (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    hash text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    last_used_at timestamptz
);
