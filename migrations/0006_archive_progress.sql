-- How far the archiver has stored each partition of the message log:
-- every record below next_offset is in messages (or set aside as
-- unstorable). Written in the same transaction as the rows, so that
-- core-svc can tell whether PostgreSQL holds what its cache has let go.
CREATE TABLE archive_progress (
    topic       TEXT NOT NULL,
    partition   INTEGER NOT NULL,
    next_offset BIGINT NOT NULL,
    PRIMARY KEY (topic, partition)
);
