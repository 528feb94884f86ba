-- How far each member has read their room (API.md, "Beyond the original":
-- PUT /read, GET /unread). On the membership row, so that read state exists
-- exactly for members and leaves with the membership. 0: never marked.
ALTER TABLE room_members ADD COLUMN last_read_id BIGINT NOT NULL DEFAULT 0;

-- Unread counts and each room's newest message, answered from this index
-- alone: a room's `message` entries that are not deleted, by id, with their
-- author (to leave out the reader's own). IF NOT EXISTS: on a large
-- `messages` table an operator may build it beforehand with CREATE INDEX
-- CONCURRENTLY under this name, and this migration then only records it.
CREATE INDEX IF NOT EXISTS messages_unread_idx ON messages (room_id, id) INCLUDE (user_id)
    WHERE kind = 1 AND NOT deleted;
