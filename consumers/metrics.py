"""The consumer's Prometheus metrics (the tests read them too)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_APPLIED = Counter("commons_users_consumer_events_applied_total", "Events applied, by type.", ["type"])
EVENTS_SKIPPED = Counter("commons_users_consumer_events_skipped_total", "Events of unknown types skipped.", ["type"])
DEAD_LETTERED = Counter(
    "commons_users_consumer_dead_lettered_total", "Messages sent to a dead-letter topic.", ["topic"]
)
FENCED_BATCHES = Counter(
    "commons_users_consumer_fenced_batches_total", "Batches refused because the partition changed hands."
)
DATABASE_RETRIES = Counter(
    "commons_users_consumer_database_retries_total", "Batches read again because the database was out of reach."
)
FANNED_OUT_ROWS = Counter(
    "commons_users_consumer_fanned_out_rows_total", "Available-update rows written or removed by events."
)
BATCH_DURATION = Histogram(
    "commons_users_consumer_batch_duration_seconds",
    "Time to apply and commit one partition's batch.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
READY = Gauge(
    "commons_users_consumer_ready", "1 while the consumer is ready (as GET /readyz says), else 0; set when scraped."
)
PARTITION_LAG = Gauge(
    "commons_users_consumer_partition_lag", "Records not yet applied, by partition.", ["topic", "partition"]
)


def observe_batch(seconds: float, skipped: int, applied_by_type: dict[str, int], fanned_out: int) -> None:
    """Count what one committed batch did. Label values come from a closed set (the known types and
    `unknown`), so that publishers cannot grow the metrics."""
    BATCH_DURATION.observe(seconds)
    EVENTS_SKIPPED.labels("unknown").inc(skipped)
    for event_type, count in applied_by_type.items():
        EVENTS_APPLIED.labels(event_type).inc(count)
    FANNED_OUT_ROWS.inc(fanned_out)
