-- Changes to the entries of history (API.md, "Beyond the original"):
-- edits, deletions and reactions, written by the archiver from the message
-- log. Every change is kept as the log carried it (for resume, and so that
-- one arriving before its entry is applied once the entry comes), and the
-- entries' latest state is kept beside them, for history and search.

-- The change itself, one row per event id, so a record read again changes
-- nothing. No foreign keys, as for messages: the entry may come later.
CREATE TABLE message_changes (
    id         BIGINT PRIMARY KEY,
    room_id    BIGINT NOT NULL,
    user_id    BIGINT NOT NULL,
    -- The entry it changes.
    message_id BIGINT NOT NULL,
    -- chat.v1.MessageKind: 4 edit, 5 delete, 6 reaction.
    kind       SMALLINT NOT NULL CHECK (kind IN (4, 5, 6)),
    -- An edit's new text.
    text       TEXT NOT NULL DEFAULT '',
    -- A reaction's emoji, and whether it was added or taken back.
    emoji      TEXT NOT NULL DEFAULT '',
    added      BOOLEAN NOT NULL DEFAULT false,
    created_at TIMESTAMPTZ NOT NULL
);
-- Resume: a room's changes after an id.
CREATE INDEX message_changes_room_idx ON message_changes (room_id, id);
-- Settling an entry: its latest edit, whether it was deleted.
CREATE INDEX message_changes_entry_idx ON message_changes (message_id, kind, id);

-- The event id of the edit an entry's text comes from (0: never edited), so
-- that an older edit, or one read again, never replaces a newer one.
ALTER TABLE messages ADD COLUMN edit_id BIGINT NOT NULL DEFAULT 0;

-- Each user's latest reaction event per emoji and entry: taken back ones
-- stay (added = false) so that an older event read later cannot bring the
-- reaction back. A deleted entry has none.
CREATE TABLE message_reactions (
    message_id BIGINT NOT NULL,
    emoji      TEXT NOT NULL,
    user_id    BIGINT NOT NULL,
    event_id   BIGINT NOT NULL,
    added      BOOLEAN NOT NULL,
    PRIMARY KEY (message_id, emoji, user_id)
);
