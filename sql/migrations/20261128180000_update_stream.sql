-- migrate:up

-- The changes of available updates, for the live update stream (README: "Live updates"): one row
-- per resource whose updates a transaction changed, naming the users whose update for it was
-- added, changed or removed. A writer's statement stages its rows (position NULL); at its commit
-- the trigger below numbers them and notifies the API replicas. The rows are pruned after
-- UPDATE_STREAM_RETENTION_SECONDS; a client that missed more is told to reload.
CREATE TABLE update_changes (
    position    bigint UNIQUE,
    changed_at  timestamptz,
    resource_id text NOT NULL,
    user_ids    text[] NOT NULL,
    staged_by   xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE SEQUENCE update_changes_position_seq OWNED BY update_changes.position;
-- The rows a transaction staged, found at its commit; numbered rows leave this index.
CREATE INDEX update_changes_staged_idx ON update_changes (staged_by) WHERE position IS NULL;
-- The pruning, oldest first.
CREATE INDEX update_changes_changed_at_idx ON update_changes (changed_at);

-- Numbers the transaction's staged rows in commit order and notifies the listeners. It runs as the
-- transaction commits (a deferred constraint trigger), under a lock held until the commit is done,
-- so that a row with a lower position is never committed after one with a higher position: a
-- reader that has seen position N has seen every committed change up to N. A savepoint rolled back
-- takes its staged rows and their trigger calls with it. The trigger fires for every staged row;
-- the first call numbers them all and marks the transaction (a setting local to it), so that the
-- others return at once.
CREATE FUNCTION number_update_changes() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    last_position bigint;
BEGIN
    IF current_setting('commons_users.changes_numbered', true) = 'yes' THEN
        RETURN NULL;
    END IF;
    PERFORM set_config('commons_users.changes_numbered', 'yes', true);
    PERFORM pg_advisory_xact_lock(7256120301);  -- 'update_changes' commit order
    WITH numbered AS (
        UPDATE update_changes SET position = nextval('update_changes_position_seq'), changed_at = clock_timestamp()
        WHERE staged_by = pg_current_xact_id() AND position IS NULL
        RETURNING position
    )
    SELECT max(position) INTO last_position FROM numbered;  -- the row that fired it is among them
    PERFORM pg_notify('commons_users_update_changes', last_position::text);
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER update_changes_numbered
    AFTER INSERT ON update_changes DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION number_update_changes();

-- migrate:down
DROP TABLE update_changes;
DROP FUNCTION number_update_changes();
