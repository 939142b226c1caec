"""User search of texts of several windows (3 letters or digits in a row), which the trigram scan
of rare text looks up three of: paging returns exactly the matches in (name, id) order whichever
way a page takes."""

import pytest

from core.users import like_pattern
from tests.core.test_user_search import MATCHES, WAYS, follow

# Repeated windows, several runs, other cases than the names', non-ASCII letters, absent text whose
# windows all match (a reversed name).
TEXTS = ("x4242", "4242", "2@sch", "ärger", "ÄRG", "straße", "ilker", "ada abbott", "abbott noah", "oë är")
NAMES = ("Zoë Ärger", "İlker Straße", "Ada Abbott", "Noah Abbott")


@pytest.mark.parametrize("way", WAYS)
async def test_texts_of_many_windows_find_exactly_their_matches(pool, way):
    await pool.execute(
        "INSERT INTO users (id, account_id, account_name, name, email, updated_at, event_id) "
        "SELECT 'u' || n, 'acct-1', 'Academy', name, lower(split_part(name, ' ', 1)) || '.x' || n * 101 "
        "       || '@school.edu', now(), gen_random_uuid() "
        "FROM generate_series(0, 399) AS n, LATERAL (SELECT ($1::text[])[1 + n % 4] AS name) AS named",
        list(NAMES),
    )
    for text in TEXTS:
        expected = [row["id"] for row in await pool.fetch(MATCHES, "acct-1", like_pattern(text))]
        assert bool(expected) == (text != "abbott noah"), text
        assert await follow(pool, text, 7, 1000, WAYS[way]) == expected, text
