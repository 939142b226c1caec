-- migrate:up

-- Trigram indexes make substring search on user names and e-mails an index scan.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- The user directory: written by `user.upserted` events and by session creation.
CREATE TABLE users (
    id                text PRIMARY KEY,
    account_id        text NOT NULL,
    account_name      text NOT NULL,
    name              text NOT NULL,
    email             text NOT NULL,
    avatar_url        text,
    canvas_user_id    text,
    canvas_api_domain text,
    is_admin          boolean NOT NULL DEFAULT false,
    roles             text[] NOT NULL DEFAULT '{}',
    -- When the identity applied here was issued, and by which event (the nil id for a session
    -- token): an older (updated_at, event_id) never overwrites a newer one.
    updated_at        timestamptz NOT NULL,
    event_id          uuid NOT NULL
);
-- User search pages through an account by (name, id).
CREATE INDEX users_account_name_idx ON users (account_id, name, id);
CREATE INDEX users_name_trgm_idx ON users USING gin (name gin_trgm_ops);
CREATE INDEX users_email_trgm_idx ON users USING gin (email gin_trgm_ops);

-- Sessions are looked up by the SHA-256 of their id; the id itself is never stored.
CREATE TABLE sessions (
    id_hash    bytea PRIMARY KEY CHECK (length(id_hash) = 32),
    user_id    text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
-- Also serves the clean-up of a user's expired sessions when a new one is created.
CREATE INDEX sessions_user_idx ON sessions (user_id);

-- A resource as of its latest published version. A deleted resource loses its row for good
-- (see resource_deletions), which drops it from imports, favorites and updates alike.
CREATE TABLE resources (
    id             text PRIMARY KEY,
    title          text NOT NULL,
    description    text NOT NULL,
    type           text NOT NULL,
    account_id     text NOT NULL,
    account_name   text NOT NULL,
    authors        jsonb NOT NULL DEFAULT '[]',
    tags           text[] NOT NULL DEFAULT '{}',
    thumbnail      jsonb,
    create_date    timestamptz NOT NULL,
    update_date    timestamptz NOT NULL,
    version_id     text NOT NULL,
    -- The highest (versionNumber, eventId) published: the version guard for this row.
    version_number integer NOT NULL,
    event_id       uuid NOT NULL
);

-- Every published version, for an update's notes and a held version's publication date.
CREATE TABLE resource_versions (
    resource_id    text NOT NULL,
    version_number integer NOT NULL,
    version_id     text NOT NULL,
    version_notes  text NOT NULL,
    published_at   timestamptz NOT NULL,
    update_date    timestamptz NOT NULL,
    -- Two events for the same version: the higher event id wins, whatever the delivery order.
    event_id       uuid NOT NULL,
    PRIMARY KEY (resource_id, version_number)
);

-- Tombstones: a deletion is final, whatever order later events about the resource arrive in.
CREATE TABLE resource_deletions (
    resource_id text PRIMARY KEY,
    deleted_at  timestamptz NOT NULL
);

-- What each user holds in each Canvas course. No foreign keys: an import may arrive before the
-- version or the user it names.
CREATE TABLE imports (
    user_id                text NOT NULL,
    resource_id            text NOT NULL,
    course_id              text NOT NULL,
    course_name            text NOT NULL,
    version_id             text NOT NULL,
    version_number         integer NOT NULL,
    -- The latest importedAt wins.
    imported_at            timestamptz NOT NULL,
    -- The resource version the user ignored for this course, if any: the course stays out of
    -- the update until a newer version than this one is published.
    ignored_version_number integer,
    PRIMARY KEY (user_id, resource_id, course_id)
);
-- Fan-out: every importer of a resource.
CREATE INDEX imports_resource_idx ON imports (resource_id, user_id);

CREATE TABLE favorites (
    user_id     text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    resource_id text NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (user_id, resource_id)
);
CREATE INDEX favorites_recent_idx ON favorites (user_id, created_at DESC, resource_id DESC);

-- The materialized available updates: one row per (user, resource) with at least one pending
-- course. The pending courses themselves are read from imports.
CREATE TABLE available_updates (
    user_id        text NOT NULL,
    resource_id    text NOT NULL,
    version_number integer NOT NULL,
    published_at   timestamptz NOT NULL,
    PRIMARY KEY (user_id, resource_id)
);
CREATE INDEX available_updates_newest_idx
    ON available_updates (user_id, published_at DESC, resource_id DESC);
CREATE INDEX available_updates_resource_idx ON available_updates (resource_id);

-- Kafka partition offsets, committed in the same transaction as the rows they produced.
-- `generation` fences a consumer whose partition was revoked and handed to another member.
CREATE TABLE consumer_offsets (
    consumer_group text NOT NULL,
    topic          text NOT NULL,
    partition      integer NOT NULL,
    next_offset    bigint,  -- NULL: read the partition from its beginning
    owner          text NOT NULL,
    generation     bigint NOT NULL,
    -- Dead letters in a row at the end of the partition so far: the halt survives restarts.
    consecutive_failures integer NOT NULL DEFAULT 0,
    PRIMARY KEY (consumer_group, topic, partition)
);

-- migrate:down
DROP TABLE consumer_offsets;
DROP TABLE available_updates;
DROP TABLE favorites;
DROP TABLE imports;
DROP TABLE resource_deletions;
DROP TABLE resource_versions;
DROP TABLE resources;
DROP TABLE sessions;
DROP TABLE users;
