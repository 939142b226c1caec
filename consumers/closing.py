"""Stopping aiokafka's consumer whatever it had pending."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """`consumer.stop()`, without its stray cancellation. A fetch that failed on a broker out of reach
    waits to retry; `stop()` cancels it, re-raises its cancellation as if it were the caller's, and
    returns before the other fetches and the connections are closed (aio-libs/aiokafka#647). That
    is what happened when a consumer stopped during a broker's outage, or right after it. Such a
    cancellation is ended here, with what `stop()` left undone; a cancellation of the caller's task
    is passed on."""
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        pending = list(consumer._fetcher._pending_tasks)
        for fetch in pending:
            fetch.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await consumer._client.close()
