-- Mail to send, written in the transaction of the change it belongs to (or by a request that must
-- answer the same whether or not the account exists) and sent afterwards by a background worker:
-- a mail server that is down loses no mail and blocks no request. A row names what to send and to
-- whom, never a secret: the single-use token a mail carries is made when it is sent, and only its
-- hash is stored.
CREATE TABLE mail_outbox (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- password_reset | email_verification | account_locked | registration_attempt
    kind            text NOT NULL,
    recipient       text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- when it was sent, or given up (too old, or nothing to send)
    done_at         timestamptz,
    outcome         text,
    last_error      text,
    CONSTRAINT mail_outbox_kind
        CHECK (kind IN ('password_reset', 'email_verification', 'account_locked', 'registration_attempt'))
);

CREATE INDEX mail_outbox_due_idx ON mail_outbox (next_attempt_at) WHERE done_at IS NULL;
