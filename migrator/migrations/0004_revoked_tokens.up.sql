-- The durable copy of every revocation, from which a flushed Redis is rebuilt.
CREATE TABLE revoked_tokens (
    kind           text NOT NULL,
    value          text NOT NULL,
    -- kind 'user' only: tokens issued at or before this instant are revoked
    revoked_before timestamptz,
    -- when the entry stops mattering: every token it can revoke has expired by then
    expires_at     timestamptz NOT NULL,
    reason         text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, value),
    CONSTRAINT revoked_tokens_kind_known CHECK (kind IN ('jti', 'sid', 'user', 'kid')),
    CONSTRAINT revoked_tokens_before_for_users CHECK ((kind = 'user') = (revoked_before IS NOT NULL))
);

-- Restoring Redis reads the unexpired entries; cleanup deletes the expired ones.
CREATE INDEX revoked_tokens_expires_at_idx ON revoked_tokens (expires_at);
