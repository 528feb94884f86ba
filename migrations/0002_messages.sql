-- Written by the archiver from the message log; ids come from core-svc.
-- No foreign keys: the log is the source of truth for what was sent, and
-- the archiver must never be stuck on a row it cannot insert.
CREATE TABLE messages (
    id         BIGINT PRIMARY KEY,
    room_id    BIGINT NOT NULL,
    user_id    BIGINT NOT NULL,
    kind       SMALLINT NOT NULL,
    text       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX messages_room_id_idx ON messages (room_id, id);

-- Snowflake node ids, leased by running core-svc replicas so that no two
-- hold the same one at the same time.
CREATE TABLE node_leases (
    node_id    INTEGER PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
