-- Devices that logged in to an account before: a login from one is never held back by the
-- per-account limit or the lockout that strangers' failures trigger.
CREATE TABLE known_devices (
    -- SHA-256 of the opaque device token the client keeps; the token itself is never stored
    token_hash   bytea PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT known_devices_token_hash_length CHECK (octet_length(token_hash) = 32)
);

CREATE INDEX known_devices_user_idx ON known_devices (user_id);
-- Addresses an account logged in from, ended sessions included.
CREATE INDEX sessions_user_created_idx ON sessions (user_id, created_at DESC);
