-- One row naming this database. core-svc puts it in every Redis key, so a
-- Redis shared with another database, or one that outlived a dropped and
-- recreated database, never answers for this one.
CREATE TABLE deployment (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    one_row boolean NOT NULL UNIQUE DEFAULT true CHECK (one_row)
);
INSERT INTO deployment DEFAULT VALUES;
