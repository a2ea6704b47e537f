-- Keeps updated_at truthful whichever code path writes a row.
CREATE FUNCTION set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE TABLE users (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email               text NOT NULL,
    username            text,
    password_hash       text NOT NULL,
    first_name          text,
    last_name           text,
    email_verified      boolean NOT NULL DEFAULT false,
    email_verified_at   timestamptz,
    roles               text[] NOT NULL DEFAULT ARRAY['user']::text[],
    profile             jsonb NOT NULL DEFAULT '{}'::jsonb,
    failed_login_count  integer NOT NULL DEFAULT 0,
    locked_until        timestamptz,
    last_login_at       timestamptz,
    password_changed_at timestamptz NOT NULL DEFAULT now(),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    deleted_at          timestamptz,
    CONSTRAINT users_email_format CHECK (char_length(email) BETWEEN 3 AND 254 AND position('@' IN email) > 1),
    CONSTRAINT users_username_format CHECK (username ~ '^[A-Za-z0-9_.-]{3,32}$'),
    CONSTRAINT users_names_length CHECK (char_length(first_name) <= 100 AND char_length(last_name) <= 100),
    CONSTRAINT users_profile_is_object CHECK (jsonb_typeof(profile) = 'object'),
    CONSTRAINT users_failed_login_count_non_negative CHECK (failed_login_count >= 0)
);

-- Email and username are unique case-insensitively among live accounts only, so a deleted
-- account's address can sign up again; logins look users up through these same indexes.
CREATE UNIQUE INDEX users_email_key ON users (lower(email)) WHERE deleted_at IS NULL;
CREATE UNIQUE INDEX users_username_key ON users (lower(username))
    WHERE deleted_at IS NULL AND username IS NOT NULL;
-- Admin listing pages through users newest first.
CREATE INDEX users_created_at_idx ON users (created_at DESC, id);

CREATE TRIGGER users_set_updated_at
    BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
