CREATE TABLE audit_logs (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_type text NOT NULL,
    user_id    uuid REFERENCES users (id) ON DELETE SET NULL,
    session_id uuid,
    ip         inet,
    user_agent text,
    data       jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT audit_logs_data_is_object CHECK (jsonb_typeof(data) = 'object')
);

-- One user's history, and one kind of event, newest first.
CREATE INDEX audit_logs_user_idx ON audit_logs (user_id, created_at DESC) WHERE user_id IS NOT NULL;
CREATE INDEX audit_logs_event_type_idx ON audit_logs (event_type, created_at DESC);
-- Rows arrive in time order, so a BRIN index serves time ranges at a fraction of a B-tree's size.
CREATE INDEX audit_logs_created_at_idx ON audit_logs USING brin (created_at);
