"""bench/RESULTS.md from the figures of one run: the machine, each target (DESIGN.md §6) with the
ratio measured and whether it is met, then every benchmark's figures as tables."""

from __future__ import annotations

from typing import Any

from bench import targets


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(data: Any) -> list[str]:
    """A dict of dicts as a table (one row per key), a list of dicts likewise; anything else as JSON-ish lines."""
    rows: list[tuple[str, dict[str, Any]]]
    if isinstance(data, dict) and data and all(isinstance(value, dict) for value in data.values()):
        rows = list(data.items())
    elif isinstance(data, list) and data and all(isinstance(value, dict) for value in data):
        rows = [("", value) for value in data]
    else:
        return [f"- {key}: {_cell(value)}" for key, value in data.items()] if isinstance(data, dict) else [f"- {data}"]
    columns: list[str] = []
    for _, row in rows:
        columns += [column for column in row if column not in columns and not isinstance(row[column], (dict, list))]
    lines = ["| | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    lines += [f"| {key} | " + " | ".join(_cell(row.get(column, "")) for column in columns) + " |" for key, row in rows]
    return lines


def markdown(figures: dict[str, Any]) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"`make bench` ({figures['profile']} profile), finished {figures['finished']}. Every ratio was measured "
        "in this one run, side by side on the same machine; the load generators (wrk, pgbench) ran as "
        "separate processes on loopback. bench/README.md says how each benchmark works.",
        *([figures["note"], ""] if "note" in figures else []),
        "",
        "## Machine",
        "",
        *[f"- {key}: {value}" for key, value in figures["machine"].items()],
        "",
        "## Targets",
        "",
        "A missed target's profile is in bench/README.md, where the targets stand, under the name in its row.",
        "",
        "| target | measured | goal | met | profile |",
        "|---|---|---|---|---|",
    ]
    for target in targets.judged(figures):
        met = "yes" if target.met else "**no**"
        lines.append(f"| {target.name} | {target.measured} | {target.goal} | {met} | {targets.profile(target)} |")
    for name in targets.TARGETS:
        if name not in figures:
            continue
        lines += ["", f"## {name}", ""]
        section = figures[name]
        if all(
            isinstance(value, dict) and not any(isinstance(v, dict | list) for v in value.values())
            for value in section.values()
        ):
            lines += _table(section)  # rows of figures: one table
            continue
        for key, value in section.items():
            if isinstance(value, (dict, list)):
                lines += [f"### {key}", "", *_table(value), ""]
            else:
                lines.append(f"- {key}: {_cell(value)}")
    return "\n".join(lines) + "\n"
