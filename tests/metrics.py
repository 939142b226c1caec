"""Reading Prometheus metrics in tests: how far this process's metrics moved, or a value on a
/metrics page."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

APPLIED = "commons_users_consumer_events_applied_total"
SKIPPED = "commons_users_consumer_events_skipped_total"
DEAD_LETTERED = "commons_users_consumer_dead_lettered_total"
FENCED = "commons_users_consumer_fenced_batches_total"
FANNED_OUT = "commons_users_consumer_fanned_out_rows_total"


def _sum(samples: Iterable[Sample], name: str, labels: dict[str, str]) -> float:
    """The sum of the samples named `name` that carry `labels` (0 when none do)."""
    return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())


def scraped(text: str, name: str, **labels: str) -> float:
    """A value on a /metrics page."""
    return _sum((s for family in text_string_to_metric_families(text) for s in family.samples), name, labels)


def _samples() -> list[Sample]:
    return [sample for family in REGISTRY.collect() for sample in family.samples]


class Moved:
    """How far this process's metrics moved since this object was made: `moved(APPLIED)`."""

    def __init__(self) -> None:
        self._start = _samples()

    def __call__(self, name: str, **labels: str) -> float:
        return _sum(_samples(), name, labels) - _sum(self._start, name, labels)
