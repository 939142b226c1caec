-- migrate:up

-- User search (README: "Data model", user search) reads a bounded number of rows per page.
-- btree_gin lets a GIN index hold the account beside the trigrams, so that a trigram scan returns
-- the matches of one account only.
CREATE EXTENSION IF NOT EXISTS btree_gin;

-- The walk through an account in name order, which common text takes. The index holds the text
-- matched, lowered, and every column a page shows, so that the walk neither lowers text nor reads
-- the heap (once the table is vacuumed).
CREATE INDEX users_search_walk_idx ON users (account_id, name, id, lower(name || E'\n' || email))
    INCLUDE (email, avatar_url);
DROP INDEX users_account_name_idx;

-- The trigrams of name and e-mail, per account: the matches of rare text. The account is held
-- under the "C" collation, as the searches that read this index ask for it (equality is the same
-- under any deterministic collation): no other index serves such a condition, so the planner cannot
-- take the walk's index and read the whole account instead. Every scan reads the whole pending list
-- of recent writes: 1 MB of it at most (128 pages) rather than the default 4 MB.
CREATE INDEX users_search_trgm_idx ON users
    USING gin (account_id COLLATE "C", lower(name || E'\n' || email) gin_trgm_ops)
    WITH (gin_pending_list_limit = 1024);
DROP INDEX users_name_trgm_idx;
DROP INDEX users_email_trgm_idx;

-- Samples of one user in 4,096 and one in 64 (by a hash of the id), which tell rare text from
-- common text by the matches among them. Their text puts the e-mail first so that no other index
-- can serve their statements. Few rows change them, so they take their writes directly rather than
-- through a pending list that every search would read.
CREATE INDEX users_search_sample_4096_idx ON users
    USING gin (account_id COLLATE "C", lower(email || E'\n' || name) gin_trgm_ops)
    WITH (fastupdate = off) WHERE (hashtext(id) & 4095) = 0;
CREATE INDEX users_search_sample_64_idx ON users
    USING gin (account_id COLLATE "C", lower(email || E'\n' || name) gin_trgm_ops)
    WITH (fastupdate = off) WHERE (hashtext(id) & 63) = 0;

-- A page reads a few thousand rows at most: never worth starting parallel workers, which a
-- generic plan, not knowing the text, may otherwise pick.
ALTER TABLE users SET (parallel_workers = 0);

-- migrate:down
ALTER TABLE users RESET (parallel_workers);
DROP INDEX users_search_sample_64_idx;
DROP INDEX users_search_sample_4096_idx;
CREATE INDEX users_name_trgm_idx ON users USING gin (name gin_trgm_ops);
CREATE INDEX users_email_trgm_idx ON users USING gin (email gin_trgm_ops);
DROP INDEX users_search_trgm_idx;
CREATE INDEX users_account_name_idx ON users (account_id, name, id);
DROP INDEX users_search_walk_idx;
DROP EXTENSION btree_gin;
