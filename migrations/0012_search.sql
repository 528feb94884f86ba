-- Full-text search over `message` entries that are not deleted (GET
-- /search). The `simple` configuration only lower-cases words: no stemming
-- or stop words of one language, so it works for text in any language. A
-- query must repeat this expression and predicate to use the index. Being
-- partial, it has no statistics the planner uses, which keeps the plan the
-- same for every query: this index, at a cost in proportion to the entries
-- that match. (With statistics, a common word was seen to switch the plan
-- to reading history newest first, which costs in proportion to the entries
-- passed over: 255 ms where this index took 67 ms, on 219,000 entries.) As for
-- messages_unread_idx, it may be built beforehand with CREATE INDEX
-- CONCURRENTLY under this name.
CREATE INDEX IF NOT EXISTS messages_search_idx ON messages USING GIN (to_tsvector('simple', text))
    WHERE kind = 1 AND NOT deleted;
