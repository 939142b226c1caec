"""`commons-users consumer`: the consumer process, from start to a clean exit on SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal

from consumers.consumer import EventConsumer
from consumers.health import serve_health
from consumers.pipeline import ConsumerHalted
from core import db
from core.settings import Settings

log = logging.getLogger("commons_users")


# The cyclic garbage collector's thresholds once started (Python's are 700, 10, 10). Batches in
# flight are many objects that outlive a young collection, so with the default thresholds the
# collector went through them again and again: 35 % of the consumer's time (bench/ingest.py). Objects
# freed by reference counting (nearly all) are freed at once whatever these say; the thresholds only
# decide how much cyclic garbage may wait to be collected.
GC_THRESHOLDS = (50_000, 20, 10)


def tune_garbage_collector() -> None:
    """Leave what start-up made (modules, schemas: most of the process's objects) out of every
    collection from now on, and collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def consume(settings: Settings) -> int:
    """Consume until SIGTERM or SIGINT (exit status 0), or until the consumer halts (2)."""
    pool = await db.create_pool(
        settings.database_url.get_secret_value(),
        min_size=1,
        max_size=settings.db_pool_max_size,
        # No statement timeout: a large fan-out may rightly take long, and would be tried forever.
        connect_timeout=settings.db_timeout_seconds,
        application_name="commons-users-consumer",
    )
    consumer = EventConsumer(settings, pool)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stopping.set)
    health = await serve_health(consumer, settings)
    try:
        await consumer.start()
        tune_garbage_collector()
        await consumer.run(stopping)  # SIGTERM: the batch in hand commits, then the loop ends
        return 0
    except ConsumerHalted as exc:
        log.critical("consumer halted: %s", exc)
        return 2
    finally:
        await consumer.stop()
        await health.cleanup()
        await pool.close()
