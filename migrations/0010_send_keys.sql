-- Idempotent sends (API.md, `Key`): what each user's key was given, for 24
-- hours, shared by every core-svc replica (see core-svc/src/send_keys.rs).
CREATE TABLE send_keys (
    user_id       BIGINT NOT NULL,
    key           TEXT NOT NULL,
    -- The message the key stands for, encoded (a chat.events.v1.Event) as
    -- it goes to the message log, so a retry sends exactly the same event.
    message_id    BIGINT NOT NULL,
    event         BYTEA NOT NULL,
    -- Whether the message log has acknowledged it.
    logged        BOOLEAN NOT NULL DEFAULT false,
    -- Until the log acknowledges it, one send at a time holds the key: the
    -- one with this claim, until claimed_until.
    claim         BIGINT NOT NULL,
    claimed_until TIMESTAMPTZ NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
CREATE INDEX send_keys_created_idx ON send_keys (created_at);
