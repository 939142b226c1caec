"""`make bench`: every benchmark beside its baselines, in one run, and bench/RESULTS.md.

    .venv/bin/python -m bench [--quick] [--only read,search,...] [--output FILE]

The full profile takes about half an hour on 2 cores; `--quick` runs each benchmark for seconds
on small data (the test suite does, to check that each one runs and produces figures), this tree
alone: without the baseline release and the peers, and so without their virtualenvs.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime
import json
from pathlib import Path
import time
from typing import Any

from bench import audit, fanout, freshness, harness, ingest, machine, memory, read, report, search, update_stream

QUICK_NOTE = (
    "A quick run: this tree's own measurements only. The baseline release (read) and the peers (read, ingest) "
    "are measured by `make bench`, and their ratios and targets with them."
)

BENCHMARKS = {
    "read": read.run,
    "search": search.run,
    "ingest": ingest.run,
    "fanout": fanout.run,
    "freshness": freshness.run,
    "memory": memory.run,
    "audit": audit.run,
    "update_stream": update_stream.run,
}


async def run_all(profile: harness.Profile, only: list[str]) -> dict[str, Any]:
    harness.require_tools()
    harness.WORK.mkdir(exist_ok=True)
    figures: dict[str, Any] = {"machine": await machine.machine(), "profile": profile.name}
    if not profile.side_by_side:
        figures["note"] = QUICK_NOTE
    try:
        for name in only:
            started = time.monotonic()
            print(f"bench: {name} ...", flush=True)
            figures[name] = await BENCHMARKS[name](profile)
            print(f"bench: {name} done in {time.monotonic() - started:.0f} s", flush=True)
    finally:
        if not profile.side_by_side:  # the read data set's databases, which the full profile keeps
            await read.drop_databases(profile)
    figures["finished"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="seconds per benchmark, small data")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated benchmarks to run")
    parser.add_argument(
        "--output", type=Path, help="the Markdown report (default: bench/RESULTS.md, or .bench/ for --quick)"
    )
    args = parser.parse_args()
    profile = harness.QUICK if args.quick else harness.FULL
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    if unknown := set(only) - set(BENCHMARKS):
        parser.error(f"unknown benchmarks: {', '.join(sorted(unknown))}")
    output = args.output or (harness.WORK / "RESULTS-quick.md" if args.quick else harness.ROOT / "bench" / "RESULTS.md")
    figures = asyncio.run(run_all(profile, only))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(figures, indent=2, default=str) + "\n")
    output.write_text(report.markdown(figures))
    print(f"bench: wrote {output} and {output.with_suffix('.json')}")


if __name__ == "__main__":
    main()
