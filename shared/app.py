"""The app factory: what turns a service's use cases into a running, observable process.

`ServiceKit` composes the parts every service has (Kafka broker with the Prometheus middleware,
MongoDB client and database, outbox and relay, inbox, metrics) and `ServiceKit.create_app`
serves the service's own API beside `/health/live`, `/health/ready`, `/metrics` and
`/docs/asyncapi`. Each service's `bootstrap.py` is its composition root and uses only this.
"""

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import uvicorn
from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import HTMLResponse, JSONResponse
from faststream.kafka import KafkaBroker
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from faststream.specification import AsyncAPI, get_asyncapi_html
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pymongo import AsyncMongoClient

from shared import topics
from shared.consumer import EventConsumer, Inbox, Subscription
from shared.http import api_key_guard, install_http_conventions
from shared.kafka_admin import ensure_topics
from shared.metrics import PlatformMetrics
from shared.mongo import Lease, UnitOfWork
from shared.outbox import Outbox, OutboxRelay
from shared.settings import ServiceSettings

log = logging.getLogger(__name__)

BackgroundJob = Callable[[], Awaitable[None]]
HOUSEKEEPING_INTERVAL_SECONDS = 60.0


@dataclass
class ServiceKit:
    name: str
    settings: ServiceSettings
    registry: CollectorRegistry
    metrics: PlatformMetrics
    mongo: AsyncMongoClient
    broker: KafkaBroker
    outbox: Outbox
    relay: OutboxRelay
    inbox: Inbox
    uow: UnitOfWork
    instance_id: str

    @classmethod
    def create(cls, name: str, settings: ServiceSettings) -> "ServiceKit":
        registry = CollectorRegistry()
        metrics = PlatformMetrics(registry)
        broker = KafkaBroker(
            settings.kafka_bootstrap_servers,
            client_id=f"switchboard-{name}",
            middlewares=[KafkaPrometheusMiddleware(registry=registry, app_name=f"switchboard-{name}")],
            logger=logging.getLogger(f"switchboard.{name}.kafka"),
        )
        mongo = AsyncMongoClient(settings.mongodb_url.get_secret_value(), tz_aware=True, connect=False)
        db = mongo[settings.mongodb_database]
        outbox = Outbox(db)
        instance_id = f"{socket.gethostname()}:{os.getpid()}"
        lock_dir = settings.mongodb_transaction_lock_dir
        uow = UnitOfWork(
            mongo, db, outbox.write, transaction_lock=lock_dir / f"{db.name}.lock" if lock_dir else None
        )
        relay = OutboxRelay(
            outbox,
            uow,
            broker,
            Lease(uow, "outbox-relay", instance_id, ttl_seconds=10),
            metrics,
            poll_interval_seconds=settings.outbox_poll_interval_seconds,
        )
        uow.after_commit(relay.wake)
        return cls(
            name=name,
            settings=settings,
            registry=registry,
            metrics=metrics,
            mongo=mongo,
            broker=broker,
            outbox=outbox,
            relay=relay,
            inbox=Inbox(db),
            uow=uow,
            instance_id=instance_id,
        )

    @property
    def db(self):
        return self.uow.db

    @property
    def consumer_group(self) -> str:
        return f"switchboard-{self.name}"

    @property
    def source(self) -> str:
        """The CloudEvents `source` of everything this service publishes."""
        return f"switchboard/{self.name}"

    def require_api_key(self):
        return api_key_guard(self.settings.switchboard_api_keys)

    def lease(self, name: str, ttl_seconds: float) -> Lease:
        return Lease(self.uow, name, self.instance_id, ttl_seconds)

    def create_app(
        self,
        *,
        api: APIRouter,
        subscriptions: Sequence[Subscription] = (),
        ensure_indexes: Sequence[Callable[[], Awaitable[None]]] = (),
        background: Sequence[BackgroundJob] = (),
        housekeeping: Sequence[BackgroundJob] = (),
        description: str = "",
    ) -> FastAPI:
        if subscriptions:
            EventConsumer(
                subscriptions,
                group=self.consumer_group,
                uow=self.uow,
                inbox=self.inbox,
                broker=self.broker,
                metrics=self.metrics,
                max_attempts=self.settings.consumer_max_attempts,
                backoff_seconds=self.settings.consumer_retry_backoff_seconds,
            ).subscribe(self.settings.consumer_batch_size)

        @contextlib.asynccontextmanager
        async def lifespan(_: FastAPI):
            if not self.settings.switchboard_api_keys:
                log.warning("SWITCHBOARD_API_KEYS is empty: every authenticated request will get 401")
            for ensure in (self.outbox.ensure_indexes, self.inbox.ensure_indexes, *ensure_indexes):
                await ensure()
            await ensure_topics(
                self.settings.kafka_bootstrap_servers, topics.ALL_WITH_DEAD_LETTERS, self.settings.kafka_topic_partitions
            )
            if self.settings.outbox_replay_on_start_seconds:
                await self.relay.replay_since(self.settings.outbox_replay_on_start_seconds)
            await self.broker.start()
            chores = (self.relay.purge_sent, lambda: self.uow.run(self.inbox.purge_expired), *housekeeping)
            tasks = [asyncio.create_task(job()) for job in (self.relay.run, *background)]
            tasks.extend(asyncio.create_task(repeat(HOUSEKEEPING_INTERVAL_SECONDS, chore)()) for chore in chores)
            try:
                yield
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await self.broker.stop()
                await self.mongo.close()

        app = FastAPI(title=f"Switchboard {self.name}", description=description, lifespan=lifespan)
        install_http_conventions(app, self.metrics, self.settings.max_request_bytes)
        app.include_router(api)
        app.include_router(self._operations_routes(description))
        return app

    def _operations_routes(self, description: str) -> APIRouter:
        routes = APIRouter(tags=["operations"])
        asyncapi = AsyncAPI(self.broker, title=f"Switchboard {self.name}", version="1.0.0", description=description)

        @routes.get("/health/live")
        async def live() -> dict:
            return {"status": "live"}

        @routes.get("/health/ready")
        async def ready() -> JSONResponse:
            checks = {"mongodb": await self._mongo_ready(), "kafka": await self.broker.ping(timeout=2)}
            ok = all(checks.values())
            return JSONResponse(
                {"status": "ready" if ok else "not ready", "checks": checks}, status_code=200 if ok else 503
            )

        @routes.get("/metrics")
        async def metrics() -> Response:
            return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

        @routes.get("/docs/asyncapi", response_class=HTMLResponse)
        async def asyncapi_html() -> str:
            return get_asyncapi_html(asyncapi.to_specification())

        @routes.get("/docs/asyncapi.json")
        async def asyncapi_json() -> JSONResponse:
            return JSONResponse(asyncapi.to_specification().to_jsonable())

        return routes

    async def _mongo_ready(self) -> bool:
        try:
            await asyncio.wait_for(self.mongo.admin.command("ping"), timeout=2)
        except Exception:
            return False
        return True


def repeat(interval_seconds: float, job: BackgroundJob) -> BackgroundJob:
    """A background job that runs `job` every interval; one failure is logged, not fatal."""

    async def forever() -> None:
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                await job()
            except Exception:
                log.exception("periodic job %s failed", getattr(job, "__qualname__", job))

    return forever


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    """Run one service in this process until SIGTERM or Ctrl-C."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, access_log=False, log_level="warning")
