-- The schema the chat features share (API.md, "Beyond the original").
-- Features add tables of their own in later migrations.

-- A history entry's latest state: what it answers, whether and when it was
-- edited, whether it was deleted (its text is then '').
ALTER TABLE messages
    ADD COLUMN reply_to  BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN edited_at TIMESTAMPTZ,
    ADD COLUMN deleted   BOOLEAN NOT NULL DEFAULT false;

-- 1: a group room (every room before this migration); 2: a direct room of
-- exactly two members.
ALTER TABLE rooms ADD COLUMN kind SMALLINT NOT NULL DEFAULT 1 CHECK (kind IN (1, 2));

-- Names are unique among group rooms only: direct rooms have no name that
-- could clash.
DROP INDEX rooms_name_key;
CREATE UNIQUE INDEX rooms_name_key ON rooms (lower(name)) WHERE kind = 1;

-- The one direct room of each pair of users, whatever the order or the
-- concurrency of their first calls: the primary key decides.
CREATE TABLE direct_rooms (
    low_uid  BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    high_uid BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    room_id  BIGINT NOT NULL UNIQUE REFERENCES rooms (id) ON DELETE CASCADE,
    PRIMARY KEY (low_uid, high_uid),
    CHECK (low_uid < high_uid)
);
