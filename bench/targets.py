"""The targets (DESIGN.md §6, and those the benchmarks' issues set) judged from the figures of one
run: each with what was measured, the goal, whether it is met, and where a missed one's profile is."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Target:
    name: str
    measured: str
    goal: str
    met: bool


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("inf")


def _read_targets(figures: dict[str, Any]) -> Iterator[Target]:
    wrk, pgbench, buffers = figures["wrk"], figures["pgbench"], figures["buffers"]
    baseline = figures.get("baseline")  # none in a quick run
    for page in ("updates", "imports", "favorites") if baseline else ():
        ours = wrk[f"{page} (this tree)"]["per_second"]
        old = wrk[f"{page} ({baseline})"]["per_second"]
        ratio = _ratio(ours, old)
        yield Target(
            f"read {page}: × release {baseline}", f"{ratio:.1f}× ({ours:.0f} vs {old:.0f} req/s)", "≥ 8×", ratio >= 8
        )
    ours = wrk["updates (this tree)"]["per_second"]
    sql = pgbench["updates (this tree)"]["per_second"]
    ratio = _ratio(ours, sql)
    yield Target(
        "read updates: × pgbench of its page SQL", f"{ratio:.2f}× ({ours:.0f} vs {sql:.0f} tps)", "≥ 0.5×", ratio >= 0.5
    )
    if "updates (FastAPI peer)" in wrk:
        peer = wrk["updates (FastAPI peer)"]["per_second"]
        ratio = _ratio(ours, peer)
        yield Target(
            "read updates: × FastAPI + SQLAlchemy peer",
            f"{ratio:.1f}× ({ours:.0f} vs {peer:.0f} req/s)",
            "≥ 3×",
            ratio >= 3,
        )
    for page in ("updates", "imports", "favorites"):
        hits = buffers[f"{page} (this tree)"]
        measured = f"{hits['page']:.1f} (+ {hits['session check']:.1f} for the session check in the same statement)"
        yield Target(f"read {page}: buffers per 24-item page", measured, "≤ 100", hits["page"] <= 100)
    errors = sum(load["errors"] for key, load in wrk.items() if "(this tree)" in key)
    yield Target("read: errors under load", str(errors), "0", errors == 0)


def _search_targets(figures: dict[str, Any]) -> Iterator[Target]:
    rows = [row for row in figures["plans"]]
    worst_rows = max(row["rows_read"] for row in rows)
    yield Target("search: rows read per page, any text, any statistics", str(worst_rows), "≤ 5,000", worst_rows <= 5000)
    # Each class's throughput is judged against the updates page's: _search_beside_read_targets.


def _ingest_targets(figures: dict[str, Any]) -> Iterator[Target]:
    ratios = figures.get("ratios", {})
    if "service/copy" in ratios:
        yield Target(
            "ingest: × COPY of the same rows",
            f"{ratios['service/copy']:.2f}×",
            "≥ 0.25×",
            ratios["service/copy"] >= 0.25,
        )
    if "service/quix" in ratios:
        yield Target(
            "ingest: × Quix Streams sink", f"{ratios['service/quix']:.1f}×", "≥ 4×", ratios["service/quix"] >= 4
        )


def _fanout_targets(figures: dict[str, Any]) -> Iterator[Target]:
    sizes = sorted({int(key.split()[0]) for key in figures if "importers" in key})
    largest = sizes[-1]
    small = figures[f"{sizes[0]} importers, stale statistics"]["seconds"]
    big = figures[f"{largest} importers, stale statistics"]["seconds"]
    growth = _ratio(big, small)
    size_ratio = largest / sizes[0]
    yield Target(
        "fan-out: cost grows linearly (stale statistics)",
        f"{growth:.1f}× the time for {size_ratio:.0f}× the importers",
        f"≤ {size_ratio:.0f}×",
        growth <= size_ratio,
    )
    yield from _fanout_beside_targets(figures)


def _fanout_beside_targets(figures: dict[str, Any]) -> Iterator[Target]:
    """The fan-out on large tables against a bare INSERT ... SELECT of the same rows there."""
    for key, run in figures.items():
        if key.startswith("beside ") and "ratio" in run:
            yield Target(
                f"fan-out {key}: × bare INSERT of the same rows into a table as large",
                f"{run['ratio']:.2f}× ({run['seconds']:.2f} vs {run['reference_seconds']:.2f} s)",
                "≤ 1.5×",
                run["ratio"] <= 1.5,
            )


def _search_beside_read_targets(figures: dict[str, Any]) -> Iterator[Target]:
    """Each class of search text against the updates page, both served by this tree in this run."""
    if "read" not in figures or "search" not in figures:
        return
    page = figures["read"]["wrk"]["updates (this tree)"]["per_second"]
    for text_class, rate in figures["search"]["throughput"].items():
        ratio = _ratio(rate, page)
        yield Target(
            f"search {text_class}: × the updates page",
            f"{ratio:.2f}× ({rate:.0f} vs {page:.0f} req/s)",
            "≥ 0.25×",
            ratio >= 0.25,
        )


def _freshness_targets(figures: dict[str, Any]) -> Iterator[Target]:
    idle = figures.get("idle", {})
    if "max_ms" in idle:
        yield Target(
            "freshness: produce → visible, idle consumer, max",
            f"{idle['max_ms']:.0f} ms",
            "≤ 50 ms",
            idle["max_ms"] <= 50,
        )
    steady = figures.get("steady", {})
    if "p99_ms" in steady:
        yield Target(
            "freshness: p99 at a steady 1,000 events/s",
            f"{steady['p99_ms']:.0f} ms",
            "≤ 250 ms",
            steady["p99_ms"] <= 250,
        )


def _memory_targets(figures: dict[str, Any]) -> Iterator[Target]:
    consumer = figures.get("consumer", {})
    if "drift_percent" in consumer:
        drift = consumer["drift_percent"]
        yield Target("memory: consumer RSS drift over the events", f"{drift:+.1f}%", "within ±10%", abs(drift) <= 10)
    api = figures.get("api", {})
    if "drift_percent" in api:
        drift = api["drift_percent"]
        yield Target("memory: API RSS drift under load", f"{drift:+.1f}%", "flat (within ±10%)", abs(drift) <= 10)


def _audit_targets(figures: dict[str, Any]) -> Iterator[Target]:
    clean, repair, after = figures["clean"], figures["repair"], figures["after repair"]
    drifted = 3 * figures["drifted_rows_of_each_kind"]
    repaired = repair["summary"].endswith(f"repaired {drifted} rows") and repair["differences_printed"] == drifted
    yield Target(
        f"audit: {figures['available_updates']:,} rows, drift written of each kind found and repaired",
        f"exit {clean['exit']}, then {repair['exit']} ({repair['differences_printed']:,} found), then {after['exit']}",
        f"exit 0, then 1 ({drifted:,} found and repaired), then 0",
        (clean["exit"], repair["exit"], after["exit"]) == (0, 1, 0) and repaired,
    )
    growth = max(run["rss_mib_max"] / run["rss_mib_after_warm_up"] - 1 for run in (clean, repair, after))
    yield Target(
        "audit: resident set growth after the warm-up, at most",
        f"{100 * growth:+.1f}% ({clean['pairs_per_second']:,} pairs/s)",
        "flat (within +10%)",
        growth <= 0.1,
    )


def _update_stream_targets(figures: dict[str, Any]) -> Iterator[Target]:
    """Bounded memory for idle streams, a large change that stalls nothing, a replica's cap, and a
    burst of large changes read a bounded number of users at a time."""
    idle = figures["idle"]
    counts = sorted(int(key.split("_")[2]) for key in idle if key.endswith("_streams"))
    rss = [idle["rss_mib_no_stream"]] + [idle[f"rss_mib_{count}_streams"] for count in counts]
    first_half, second_half = rss[1] - rss[0], rss[2] - rss[1]
    yield Target(
        f"update stream: resident set of {counts[-1]:,} idle streams, second half × first half",
        f"{_ratio(second_half, first_half):.2f}× ({idle['kib_per_stream']:.1f} KiB a stream, {rss[-1]:.0f} MiB)",
        "bounded: linear (≤ 1.2×)",
        _ratio(second_half, first_half) <= 1.2,
    )
    watched, during = figures["watched"], figures["readyz while the events go out"]
    yield Target(
        f"update stream: {watched['streams']:,} streams get a new version's event, after the commit",
        f"{watched['last_s']:.2f} s (median {watched['median_s']:.2f} s)",
        "≤ 1 s",
        watched["last_s"] <= 1,
    )
    yield Target(
        "update stream: /readyz while the events go out, at most",
        f"{during['max_ms']:.0f} ms (at rest {figures['readyz at rest']['max_ms']:.0f} ms)",
        "no stall (≤ 100 ms)",
        during["max_ms"] <= 100,
    )
    cpu = figures["api cpu seconds beyond rest"]["r-unwatched: no stream of its importers"]
    yield Target(
        f"update stream: API CPU for a change naming {figures['importers of each resource']:,} users, none connected",
        f"{cpu:.2f} s",
        "≤ 0.1 s",
        cpu <= 0.1,
    )
    cap = figures["cap"]
    yield Target(
        f"update stream: a stream past the replica's cap of {cap['streams']:,}",
        f"{cap['one_more']} ({cap['rss_mib_at_the_cap']:.0f} MiB at the cap)",
        "503",
        " 503 " in f"{cap['one_more']} ",
    )
    burst = figures["burst"]
    growth = burst["rss_mib_highest"] - burst["rss_mib_before"]
    yield Target(
        f"update stream: {burst['changes']} changes of {burst['users_each']:,} users in one commit, resident set",
        f"+{growth:.1f} MiB at the highest ({burst['seconds_until_handed_over']:.1f} s to hand them over)",
        "bounded (≤ +32 MiB)",
        growth <= 32,
    )
    yield Target(
        "update stream: /readyz while the hub reads them, at most",
        f"{burst['readyz']['max_ms']:.0f} ms",
        "≤ 100 ms",
        burst["readyz"]["max_ms"] <= 100,
    )


# Where the profile of a missed target is: the bullet of bench/README.md ("Where the targets stand")
# that says where its time goes, by the start of the target's name.
PROFILES = {
    "read updates: buffers": "Buffers of the updates page",
    "read": "Read path",
    "search": "Search",
    "ingest": "Ingest",
    "fan-out": "Fan-out",
    "freshness": "Freshness",
    "update stream": "Live update stream",
}


def profile(target: Target) -> str:
    if target.met:
        return ""
    section = next((section for prefix, section in PROFILES.items() if target.name.startswith(prefix)), None)
    return f"[{section}](README.md#where-the-targets-stand)" if section else ""


TARGETS: dict[str, Callable[[dict[str, Any]], Iterator[Target]]] = {
    "read": _read_targets,
    "search": _search_targets,
    "ingest": _ingest_targets,
    "fanout": _fanout_targets,
    "freshness": _freshness_targets,
    "memory": _memory_targets,
    "audit": _audit_targets,
    "update_stream": _update_stream_targets,
}


def judged(figures: dict[str, Any]) -> list[Target]:
    """Every target that the run's figures measure, in the benchmarks' order."""
    measured = [target for name, targets in TARGETS.items() if name in figures for target in targets(figures[name])]
    return measured + list(_search_beside_read_targets(figures))
