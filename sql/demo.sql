-- Demo rows for `make run`: one account, a teacher, an admin, a few resources, imports and
-- favorites. Idempotent: re-running it changes nothing.

INSERT INTO users (id, account_id, account_name, name, email, avatar_url, canvas_user_id,
                   canvas_api_domain, is_admin, roles, updated_at)
VALUES
    ('u-ada', 'acct-1', 'Lovelace Academy', 'Ada Lovelace', 'ada@lovelace.example', NULL,
     '1001', 'canvas.lovelace.example', false, '{teacher}', '2026-01-01T00:00:00Z'),
    ('u-grace', 'acct-1', 'Lovelace Academy', 'Grace Hopper', 'grace@lovelace.example', NULL,
     '1002', 'canvas.lovelace.example', true, '{admin}', '2026-01-01T00:00:00Z'),
    ('u-alan', 'acct-1', 'Lovelace Academy', 'Alan Turing', 'alan@lovelace.example', NULL,
     '1003', 'canvas.lovelace.example', false, '{teacher}', '2026-01-01T00:00:00Z'),
    ('u-katherine', 'acct-2', 'Johnson College', 'Katherine Johnson', 'katherine@johnson.example',
     NULL, '2001', 'canvas.johnson.example', false, '{teacher,group_manager}', '2026-01-01T00:00:00Z')
ON CONFLICT (id) DO NOTHING;

INSERT INTO resources (id, title, description, type, account_id, account_name, authors, tags,
                       thumbnail, create_date, update_date, version_id, version_number)
VALUES
    ('r-fractions', 'Fractions with pizza', 'Halves, thirds and quarters, served hot.', 'assignment',
     'acct-1', 'Lovelace Academy', '[{"id": "u-alan", "name": "Alan Turing", "avatarUrl": null}]',
     '{math,fractions}', '{"url": "https://img.example/pizza.png", "description": "A pizza in eighths"}',
     '2026-02-01T09:00:00Z', '2026-03-01T09:00:00Z', 'v-fractions-2', 2),
    ('r-photosynthesis', 'Photosynthesis lab', 'Leaves, light and a lot of oxygen.', 'quiz',
     'acct-1', 'Lovelace Academy', '[{"id": "u-grace", "name": "Grace Hopper", "avatarUrl": null}]',
     '{biology}', NULL, '2026-02-10T09:00:00Z', '2026-02-10T09:00:00Z', 'v-photo-1', 1),
    ('r-poetry', 'Reading poetry aloud', 'Rhythm, metre and breath.', 'module',
     'acct-2', 'Johnson College', '[{"id": "u-katherine", "name": "Katherine Johnson", "avatarUrl": null}]',
     '{english,poetry}', NULL, '2026-02-20T09:00:00Z', '2026-02-20T09:00:00Z', 'v-poetry-1', 1)
ON CONFLICT (id) DO NOTHING;

INSERT INTO resource_versions (resource_id, version_number, version_id, version_notes, published_at)
VALUES
    ('r-fractions', 1, 'v-fractions-1', 'First version.', '2026-02-01T09:00:00Z'),
    ('r-fractions', 2, 'v-fractions-2', 'Adds a worksheet on mixed numbers.', '2026-03-01T09:00:00Z'),
    ('r-photosynthesis', 1, 'v-photo-1', 'First version.', '2026-02-10T09:00:00Z'),
    ('r-poetry', 1, 'v-poetry-1', 'First version.', '2026-02-20T09:00:00Z')
ON CONFLICT DO NOTHING;

INSERT INTO imports (user_id, resource_id, course_id, course_name, version_id, version_number, imported_at)
VALUES
    ('u-ada', 'r-fractions', 'c-101', 'Maths 101', 'v-fractions-1', 1, '2026-02-05T10:00:00Z'),
    ('u-ada', 'r-fractions', 'c-102', 'Maths 102', 'v-fractions-1', 1, '2026-02-06T10:00:00Z'),
    ('u-ada', 'r-photosynthesis', 'c-201', 'Biology 201', 'v-photo-1', 1, '2026-02-12T10:00:00Z'),
    ('u-alan', 'r-fractions', 'c-301', 'Maths 301', 'v-fractions-2', 2, '2026-03-02T10:00:00Z')
ON CONFLICT DO NOTHING;

INSERT INTO favorites (user_id, resource_id, created_at)
VALUES
    ('u-ada', 'r-poetry', '2026-03-03T10:00:00Z'),
    ('u-ada', 'r-photosynthesis', '2026-03-04T10:00:00Z')
ON CONFLICT DO NOTHING;
