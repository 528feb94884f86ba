-- Records of the message log that the archiver cannot store as messages,
-- set aside so that none holds back the records behind it and none is lost
-- silently: a payload that is not a message, a row PostgreSQL refuses (a
-- NUL in the text, say), or a message whose id a different stored message
-- already has. One row per record, so setting one aside again (a batch
-- read twice) changes nothing.
CREATE TABLE dead_letters (
    topic         TEXT NOT NULL,
    partition     INTEGER NOT NULL,
    record_offset BIGINT NOT NULL,
    -- NULL when the payload is not a message.
    message_id    BIGINT,
    -- The record's payload as it is in the log; NULL when it has none.
    payload       BYTEA,
    -- 'undecodable', 'refused' or 'id collision'.
    reason        TEXT NOT NULL,
    error         TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, record_offset)
);
