"""The shape of the repository, as the README's Development section describes it."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE_FOLDERS = ("core", "service", "consumers", "sql", "devtools", "bench")
LIMIT = 300


def test_no_source_file_outside_tests_is_over_300_lines():
    sources = [
        path
        for folder in SOURCE_FOLDERS
        for path in (ROOT / folder).rglob("*")
        if path.suffix in (".py", ".sql") and "__pycache__" not in path.parts
    ]
    assert len(sources) > 40  # the folders were found
    too_long = {str(path.relative_to(ROOT)): n for path in sources if (n := len(path.read_text().splitlines())) > LIMIT}
    assert too_long == {}
