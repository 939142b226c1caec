"""`commons-users consumer`: the consumer process, from start to a clean exit on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from consumers.consumer import EventConsumer
from consumers.health import serve_health
from consumers.metrics import DEAD_LETTERED
from consumers.pipeline import ConsumerHalted
from consumers.topics import event_topics
from core import db, update_stream
from core.observability import tune_garbage_collector
from core.settings import Settings

log = logging.getLogger("commons_users")


async def consume(settings: Settings) -> int:
    """Consume until SIGTERM or SIGINT (exit status 0), or until the consumer halts (2)."""
    pool = await db.create_pool(
        settings.database_url.get_secret_value(),
        min_size=1,
        max_size=settings.db_pool_max_size,
        # No statement timeout: a large fan-out may rightly take long, and would be tried forever.
        connect_timeout=settings.db_timeout_seconds,
        application_name="commons-users-consumer",
        transaction_pooler=settings.database_transaction_pooler,
    )
    consumer = EventConsumer(settings, pool)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stopping.set)
    health = await serve_health(consumer, settings)
    pruning = asyncio.create_task(update_stream.prune_forever(pool, settings.update_stream_retention_seconds))
    for topic in event_topics(settings):  # at 0 from the start, so that rate() sees the first one
        DEAD_LETTERED.labels(topic)
    try:
        await consumer.start()
        tune_garbage_collector()
        await consumer.run(stopping)  # SIGTERM: the batch in hand commits, then the loop ends
        return 0
    except ConsumerHalted as exc:
        log.critical("consumer halted: %s", exc)
        return 2
    finally:
        pruning.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pruning
        await consumer.stop()
        await health.cleanup()
        await pool.close()
