"""`make bench` in its seconds-long profile: every benchmark runs against the real processes and
produces figures, and the report is written. Only that: no figure is judged here (a benchmark
measures, a test never times)."""

import json
from pathlib import Path
import subprocess
import sys

from bench.__main__ import BENCHMARKS

ROOT = Path(__file__).resolve().parents[2]


def test_every_benchmark_runs_and_reports_figures(tmp_path):
    report = tmp_path / "RESULTS.md"
    subprocess.run([sys.executable, "-m", "bench", "--quick", "--output", str(report)], cwd=ROOT, check=True)

    figures = json.loads(report.with_suffix(".json").read_text())
    text = report.read_text()
    for name in BENCHMARKS:
        assert figures[name], f"{name} produced no figures"
        assert f"## {name}" in text
    assert "## Targets" in text and "| target | measured | goal | met |" in text
