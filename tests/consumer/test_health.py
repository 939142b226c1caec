"""The consumer's probes and metrics, on the port of their own."""

import time

from aiohttp.test_utils import TestClient, TestServer
import pytest

from consumers.consumer import EventConsumer
from consumers.health import health_app
from tests.factories import at, imported, published
from tests.kafka import consume_until, produce
from tests.metrics import APPLIED, scraped


async def test_consumer_probes_and_metrics(consumer_settings, pool, moved):
    consumer = EventConsumer(consumer_settings, pool, member="member-1")
    async with TestClient(TestServer(health_app(consumer))) as probes:
        assert (await probes.get("/healthz")).status == 200
        assert (await probes.get("/readyz")).status == 503  # not in the group yet
        await consumer.start()
        try:
            await produce(consumer_settings, published("r1", 1), imported("u1", "r1", "c1", at(1)))
            await consume_until(consumer, lambda: moved(APPLIED) == 2)
            await consumer.run_once(timeout_ms=100)
            response = await probes.get("/readyz")
            assert response.status == 200, await response.text()
            text = await (await probes.get("/metrics")).text()
            assert scraped(text, APPLIED, type="resource.imported") >= 1
            assert "commons_users_consumer_partition_lag" in text
            assert "commons_users_consumer_batch_duration_seconds_bucket" in text

            consumer.last_turn = time.monotonic() - consumer_settings.consumer_liveness_seconds - 1
            assert (await probes.get("/healthz")).status == 503  # the loop stopped turning
        finally:
            await consumer.stop()


@pytest.mark.parametrize(("lag", "ready"), [(0, 200), (5000, 503)])
async def test_consumer_readiness_depends_on_lag(consumer_settings, pool, monkeypatch, lag, ready):
    consumer = EventConsumer(consumer_settings, pool, member="member-1")
    consumer.ownership.joined = True
    monkeypatch.setattr(consumer, "lag", lambda: {("t", 0): lag})
    async with TestClient(TestServer(health_app(consumer))) as probes:
        assert (await probes.get("/readyz")).status == ready
        # For alerts, the metrics say the same (a probe's answer is kept nowhere).
        assert scraped(await (await probes.get("/metrics")).text(), "commons_users_consumer_ready") == (ready == 200)
    await consumer.stop()
