"""`make bench` in its seconds-long profile: every benchmark runs against the real processes and
produces figures, and the report is written. Only that: no figure is judged here (a benchmark
measures, a test never times). Each benchmark runs on its own, so that the workers of `make test`
share them out, and names its databases with a prefix of this run's own."""

import json
import os
from pathlib import Path
import secrets
import subprocess
import sys

import pytest

from bench.__main__ import BENCHMARKS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", BENCHMARKS)
def test_each_benchmark_runs_and_reports_figures(name, tmp_path):
    report = tmp_path / "RESULTS.md"
    subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", name, "--output", str(report)],
        cwd=ROOT,
        env={**os.environ, "BENCH_DATABASE_PREFIX": f"bench_{secrets.token_hex(4)}"},
        check=True,
    )

    figures = json.loads(report.with_suffix(".json").read_text())
    text = report.read_text()
    assert figures[name], f"{name} produced no figures"
    assert f"## {name}" in text
    assert "## Targets" in text and "| target | measured | goal | met | profile |" in text
