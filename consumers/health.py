"""The consumer's probes and metrics, on a port of its own."""

from __future__ import annotations

import time

from aiohttp import web

from consumers.consumer import EventConsumer
from consumers.metrics import READY
from core.observability import health_response, metrics_response, observe_pool
from core.settings import Settings

CONSUMER = web.AppKey("consumer", EventConsumer)


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the consume loop is still turning."""
    consumer = request.app[CONSUMER]
    idle = time.monotonic() - consumer.last_turn
    live = idle < consumer.settings.consumer_liveness_seconds
    return health_response(live, f"the loop last turned {idle:.1f} s ago")


def readiness(consumer: EventConsumer) -> tuple[bool, str]:
    """Ready once the group was joined, while no assigned partition lags too far behind."""
    if not consumer.joined:
        return False, "not in the consumer group yet"
    worst = max(consumer.lag().values(), default=0)
    ready = worst <= consumer.settings.consumer_ready_max_lag
    return ready, f"{len(consumer.assignment)} partitions, largest lag {worst}"


async def readyz(request: web.Request) -> web.Response:
    return health_response(*readiness(request.app[CONSUMER]))


async def metrics(request: web.Request) -> web.Response:
    consumer = request.app[CONSUMER]
    observe_pool(consumer.pool, consumer.settings.db_pool_max_size)
    READY.set(readiness(consumer)[0])  # for alerts: a probe's answer is not kept anywhere
    return metrics_response()


def health_app(consumer: EventConsumer) -> web.Application:
    app = web.Application()
    app[CONSUMER] = consumer
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def serve_health(consumer: EventConsumer, settings: Settings) -> web.AppRunner:
    runner = web.AppRunner(health_app(consumer), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", settings.consumer_health_port).start()
    return runner
