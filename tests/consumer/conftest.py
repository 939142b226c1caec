"""Fixtures of the consumer tests: a started member, and the consumer's metrics as they move."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from consumers.consumer import EventConsumer
from core.settings import Settings
from tests.metrics import Moved


@pytest.fixture
async def consumer(consumer_settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[EventConsumer]:
    consumer = EventConsumer(consumer_settings, pool, member="member-1")
    await consumer.start()
    yield consumer
    await consumer.stop()


@pytest.fixture
def moved() -> Moved:
    """How far the metrics moved since the test began: `moved(APPLIED)`."""
    return Moved()
