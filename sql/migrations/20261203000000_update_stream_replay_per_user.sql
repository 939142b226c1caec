-- migrate:up

-- The live update stream on several replicas (README: "Live updates").
--
-- A reconnection's replay reads only the user's own rows: each available update remembers the
-- change that last wrote it (the writer's transaction and the chunk of the change that names the
-- user), and an update removed leaves a tombstone that says the same. The change's position is
-- then one lookup by that key. A log with a row per user and change would cost a fan-out one more
-- row and index entry per importer (about 60 % more than the upsert itself, bench/README.md);
-- these two columns cost nothing beside the row the fan-out writes anyway.
ALTER TABLE available_updates ADD COLUMN changed_by xid8, ADD COLUMN change_chunk integer;

CREATE TABLE removed_updates (
    user_id      text NOT NULL,
    resource_id  text NOT NULL,
    removed_by   xid8 NOT NULL,
    change_chunk integer NOT NULL,
    removed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, resource_id)
);
-- The pruning, oldest first.
CREATE INDEX removed_updates_removed_at_idx ON removed_updates (removed_at);

-- A change names at most 10,000 users (a larger fan-out is staged in chunks), so that an API
-- replica reads a bounded number of users at a time; user_count lets it count them unread. The
-- key (staged_by, resource_id, chunk) is what an update or a tombstone points to. The changes kept
-- so far cannot be pointed to: they are dropped, and a client that reconnects from before this
-- migration is told to reload.
TRUNCATE update_changes;
ALTER TABLE update_changes
    ADD COLUMN chunk integer NOT NULL,
    ADD COLUMN user_count integer NOT NULL;
DROP INDEX update_changes_staged_idx;
CREATE UNIQUE INDEX update_changes_change_idx ON update_changes (staged_by, resource_id, chunk);

-- migrate:down
DROP INDEX update_changes_change_idx;
CREATE INDEX update_changes_staged_idx ON update_changes (staged_by) WHERE position IS NULL;
ALTER TABLE update_changes DROP COLUMN chunk, DROP COLUMN user_count;
DROP TABLE removed_updates;
ALTER TABLE available_updates DROP COLUMN changed_by, DROP COLUMN change_chunk;
