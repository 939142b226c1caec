-- migrate:up

-- The read model (README: "Data model"): what the API serves is rendered as JSON when it is
-- written, so that a page is a few index lookups whose bytes go out as they are.

-- A time as the API writes it, as pydantic writes the API's other times: UTC, ISO 8601 with a Z,
-- and six digits of fraction when the second has one. JSON's encoding of a timestamp is fixed
-- (XSD) whatever DateStyle says, so the result never varies. The function is declared STABLE,
-- as to_json is, and not STRICT, so that the planner inlines it: a fan-out calls it for every
-- course, and to_char, or a call not inlined, costs several times more.
CREATE FUNCTION api_time(t timestamptz) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
SELECT rpad(btrim(to_json(t AT TIME ZONE 'UTC')::text, '"'), CASE WHEN t = date_trunc('second', t) THEN 19 ELSE 26 END, '0')
       || 'Z'
$$;

-- The resource's latest version, for its update: the notes and publication date beside the rest.
ALTER TABLE resources ADD COLUMN version_notes text, ADD COLUMN published_at timestamptz;
UPDATE resources r SET version_notes = v.version_notes, published_at = v.published_at
FROM resource_versions v WHERE v.resource_id = r.id AND v.version_number = r.version_number;
-- A resource always arrives with its version; these never stay empty.
UPDATE resources SET version_notes = '', published_at = update_date WHERE published_at IS NULL;
ALTER TABLE resources ALTER COLUMN version_notes SET NOT NULL, ALTER COLUMN published_at SET NOT NULL;

-- A resource as the API shows it, kept by PostgreSQL beside the row it is made of. IMMUTABLE, as a
-- generated column requires: it is (api_time above).
CREATE FUNCTION resource_document(
    id text, title text, description text, type text, account_id text, account_name text, authors jsonb,
    tags text[], thumbnail jsonb, create_date timestamptz, update_date timestamptz, version_id text)
RETURNS json
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
SELECT json_build_object(
    'id', id, 'title', title, 'description', description, 'type', type,
    'account', json_build_object('id', account_id, 'name', account_name),
    'authors', authors::json, 'tags', to_json(tags), 'thumbnail', thumbnail::json,
    'createDate', api_time(create_date), 'updateDate', api_time(update_date), 'versionId', version_id)
$$;

-- An update to the resource's latest version as the API shows it, but for its courses.
CREATE FUNCTION update_document(
    version_id text, version_notes text, published_at timestamptz, update_date timestamptz, resource json)
RETURNS json
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
SELECT json_build_object(
    'versionId', version_id, 'versionNotes', version_notes, 'createDate', api_time(published_at),
    'updateDate', api_time(update_date), 'resource', resource)
$$;

-- The resource's document, and its update's document open for the courses that each update keeps
-- (the object's text without its closing brace: with_courses closes it), both kept by PostgreSQL
-- beside the row they are made of.
ALTER TABLE resources
    ADD COLUMN document json GENERATED ALWAYS AS (resource_document(
        id, title, description, type, account_id, account_name, authors, tags, thumbnail, create_date, update_date,
        version_id)) STORED,
    ADD COLUMN update_head text GENERATED ALWAYS AS (left(update_document(
        version_id, version_notes, published_at, update_date, resource_document(
            id, title, description, type, account_id, account_name, authors, tags, thumbnail, create_date,
            update_date, version_id))::text, -1)) STORED;

-- An update as the API shows it: its resource's update_head, closed with the update's courses.
-- Concatenation only: no JSON is parsed or measured when a page is read.
CREATE FUNCTION with_courses(update_head text, courses json) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT update_head || ',"courses":' || courses::text || '}' $$;

-- An update's pending courses, as the API shows them, kept with the update.
ALTER TABLE available_updates ADD COLUMN courses json;
UPDATE available_updates a SET courses = c.courses
FROM (
    SELECT i.user_id, i.resource_id,
           json_agg(json_build_object(
                        'courseId', i.course_id, 'courseName', i.course_name, 'importDate', api_time(i.imported_at),
                        'versionCreateDate', api_time(held.published_at))
                    ORDER BY i.imported_at DESC, i.course_id) AS courses
    FROM imports i
    JOIN resources r ON r.id = i.resource_id
    LEFT JOIN resource_versions held ON held.resource_id = i.resource_id AND held.version_number = i.version_number
    WHERE course_is_pending(i.version_number, i.ignored_version_number, r.version_number)
    GROUP BY i.user_id, i.resource_id
) c
WHERE c.user_id = a.user_id AND c.resource_id = a.resource_id;
DELETE FROM available_updates WHERE courses IS NULL;
ALTER TABLE available_updates ALTER COLUMN courses SET NOT NULL;

DROP VIEW available_update_details;
-- The refresh finds a resource's pairs through imports_resource_idx.
DROP INDEX available_updates_resource_idx;

-- The imports listing: each imported resource once, by its latest import.
CREATE TABLE imported_resources (
    user_id          text NOT NULL,
    resource_id      text NOT NULL,
    last_imported_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, resource_id)
);
CREATE INDEX imported_resources_recent_idx
    ON imported_resources (user_id, last_imported_at DESC, resource_id DESC);
INSERT INTO imported_resources (user_id, resource_id, last_imported_at)
SELECT user_id, resource_id, max(imported_at) FROM imports GROUP BY user_id, resource_id;

-- migrate:down
DROP TABLE imported_resources;
CREATE INDEX available_updates_resource_idx ON available_updates (resource_id);
ALTER TABLE available_updates DROP COLUMN courses;
DROP FUNCTION with_courses(text, json);
ALTER TABLE resources DROP COLUMN update_head, DROP COLUMN document, DROP COLUMN version_notes,
    DROP COLUMN published_at;
DROP FUNCTION update_document(text, text, timestamptz, timestamptz, json);
DROP FUNCTION resource_document(text, text, text, text, text, text, jsonb, text[], jsonb, timestamptz, timestamptz, text);
DROP FUNCTION api_time(timestamptz);
CREATE VIEW available_update_details AS
SELECT a.user_id, a.resource_id, a.published_at,
       v.version_id AS update_version_id, v.version_notes, v.published_at AS version_create_date,
       v.update_date AS version_update_date,
       r.id, r.title, r.description, r.type, r.account_id, r.account_name, r.authors, r.tags, r.thumbnail,
       r.create_date, r.update_date, r.version_id,
       c.courses
FROM available_updates a
JOIN resources r ON r.id = a.resource_id
JOIN resource_versions v ON v.resource_id = a.resource_id AND v.version_number = a.version_number
CROSS JOIN LATERAL (
    SELECT jsonb_agg(jsonb_build_object(
               'courseId', i.course_id, 'courseName', i.course_name, 'importDate', i.imported_at,
               'versionCreateDate', held.published_at)
           ORDER BY i.imported_at DESC, i.course_id) AS courses
    FROM imports i
    LEFT JOIN resource_versions held ON held.resource_id = i.resource_id AND held.version_number = i.version_number
    WHERE i.user_id = a.user_id AND i.resource_id = a.resource_id
      AND course_is_pending(i.version_number, i.ignored_version_number, a.version_number)
) c;
