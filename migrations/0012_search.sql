-- Full-text search over `message` entries that are not deleted (GET
-- /search). The `simple` configuration only lower-cases words: no stemming
-- or stop words of one language, so it works for text in any language. A
-- query must repeat this expression and predicate to use the index. As for
-- messages_unread_idx, it may be built beforehand with CREATE INDEX
-- CONCURRENTLY under this name.
CREATE INDEX IF NOT EXISTS messages_search_idx ON messages USING GIN (to_tsvector('simple', text))
    WHERE kind = 1 AND NOT deleted;
