-- migrate:up

-- When a course is pending (README: "Updates and ignores"): the version it holds is older than
-- the latest, and that latest version was not ignored there. The one statement of the rule: the
-- refresh of available_updates, the courses of an update and the ignore all call it. A simple SQL
-- function, so the planner inlines it.
CREATE FUNCTION course_is_pending(held_version integer, ignored_version integer, latest_version integer)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT held_version < latest_version AND coalesce(ignored_version, 0) < latest_version $$;

-- An available update as the API shows it: the new version, the resource as of it, and the
-- pending courses (most recently imported first) with the date of the version each holds.
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

-- migrate:down
DROP VIEW available_update_details;
DROP FUNCTION course_is_pending(integer, integer, integer);
