"""The app factory: what turns a service's use cases into a running, observable process.

`ServiceKit` composes the parts every service has (Kafka broker with the Prometheus middleware,
MongoDB client and database, outbox and relay, inbox, metrics) and `ServiceKit.create_app`
serves the service's own API beside `/health/live`, `/health/ready`, `/metrics` and
`/docs/asyncapi`. Each service's `bootstrap.py` is its composition root and uses only this.
"""

import asyncio
import contextlib
import gc
import logging
import os
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import uvicorn
from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import HTMLResponse, JSONResponse
from faststream.kafka import KafkaBroker
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from faststream.specification import AsyncAPI, get_asyncapi_html
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, Field
from pymongo import AsyncMongoClient

from shared import contract, topics
from shared.consumer import ConsumerLagMonitor, EventConsumer, Inbox, Prefetch, Subscription
from shared.access import KeyPolicy
from shared.dead_letters import DeadLetters
from shared.http import api_key_guard, install_http_conventions, problem_answers, scope_guard
from shared.kafka_admin import ensure_topics
from shared.kafka_binding import ContentMode
from shared.logging import configure_logging
from shared.metrics import MongoCommandCounter, PlatformMetrics
from shared.mongo import Lease, Transaction, UnitOfWork
from shared.outbox import Outbox, OutboxRelay
from shared.rules_file import RulesFileError
from shared.settings import ServiceSettings
from shared.tracing import kafka_middlewares

log = logging.getLogger(__name__)

BackgroundJob = Callable[[], Awaitable[None]]
SCRAPE_REFRESH_TIMEOUT_SECONDS = 5.0
"""How long `/metrics` waits for each gauge's read: within Prometheus' default scrape timeout (10 s)."""
HOUSEKEEPING_INTERVAL_SECONDS = 60.0
PRODUCER_BATCH_BYTES = 256 * 1024
"""The most a relay puts in one record batch per partition (aiokafka's default is 16 KiB). It binds only
when events queue up: a burst's outbox round then goes out as a few batches instead of one per 16 KiB,
and the embedded broker writes, lists and reads every batch as an object of its own. Well under the 1 MiB
a consumer fetches per partition (`max_partition_fetch_bytes`), so every batch fits one fetch."""


class Liveness(BaseModel):
    status: Literal["live"]


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    checks: dict[str, bool] = Field(description="Each dependency (`mongodb`, `kafka`): whether it answered.")


@dataclass
class ServiceKit:
    name: str
    settings: ServiceSettings
    registry: CollectorRegistry
    metrics: PlatformMetrics
    mongo: AsyncMongoClient
    broker: KafkaBroker
    dead_letters: DeadLetters
    outbox: Outbox
    relay: OutboxRelay
    inbox: Inbox
    uow: UnitOfWork
    instance_id: str
    needs: Callable[[str], object]
    """`dependencies=[kit.needs("agents")]` on a route: the key's scope and rate limit (one bucket per key
    for the whole process)."""
    tracer_provider: object | None = None  # an OpenTelemetry TracerProvider when tracing is on

    @classmethod
    def create(
        cls, name: str, settings: ServiceSettings, transaction_type: type[Transaction] = Transaction
    ) -> "ServiceKit":
        """`transaction_type`: the service's transaction, which carries its repositories."""
        registry = CollectorRegistry()
        metrics = PlatformMetrics(registry)
        tracing, tracer_provider = kafka_middlewares(name)
        broker = KafkaBroker(
            settings.kafka_bootstrap_servers,
            client_id=f"switchboard-{name}",
            max_batch_size=PRODUCER_BATCH_BYTES,
            middlewares=[*tracing, KafkaPrometheusMiddleware(registry=registry, app_name=f"switchboard-{name}")],
            logger=logging.getLogger(f"switchboard.{name}.kafka"),
        )
        mongo = AsyncMongoClient(
            settings.mongodb_url.get_secret_value(),
            tz_aware=True,
            connect=False,
            event_listeners=[MongoCommandCounter(metrics)],
        )
        db = mongo[settings.mongodb_database]
        outbox = Outbox(db)
        instance_id = f"{socket.gethostname()}:{os.getpid()}"
        lock_dir = settings.mongodb_transaction_lock_dir
        uow = UnitOfWork(
            mongo,
            db,
            outbox.write,
            transaction_lock=lock_dir / f"{db.name}.lock" if lock_dir else None,
            transaction_type=transaction_type,
        )
        relay = OutboxRelay(
            outbox,
            uow,
            broker,
            Lease(uow, "outbox-relay", instance_id, ttl_seconds=10),
            metrics,
            poll_interval_seconds=settings.outbox_poll_interval_seconds,
            linger_seconds=settings.outbox_linger_seconds,
            content_mode=ContentMode(settings.cloudevents_mode),
        )
        uow.after_commit(relay.wake)
        return cls(
            name=name,
            settings=settings,
            registry=registry,
            metrics=metrics,
            mongo=mongo,
            broker=broker,
            dead_letters=DeadLetters(settings.kafka_bootstrap_servers, client_id=f"switchboard-{name}-dead-letters"),
            outbox=outbox,
            relay=relay,
            inbox=Inbox(db),
            uow=uow,
            instance_id=instance_id,
            needs=scope_guard(KeyPolicy(settings.scopes(), settings.rate_limit_per_minute)),
            tracer_provider=tracer_provider,
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
        prefetch: Prefetch | None = None,
        ensure_indexes: Sequence[Callable[[], Awaitable[None]]] = (),
        background: Sequence[BackgroundJob] = (),
        housekeeping: Sequence[BackgroundJob] = (),
        before_scrape: Sequence[Callable[[], Awaitable[None]]] = (),
        description: str = "",
        publishes: Mapping[str, Sequence[type]] | None = None,
        idempotent_handlers: bool = False,
    ) -> FastAPI:
        """`publishes` (topic -> payload types) documents what the service sends in its AsyncAPI
        document; by default the service's entry in `shared.contract.PUBLISHES`.

        `idempotent_handlers`: an event handled again changes nothing (insights' fold), so the
        consumer keeps no inbox, which is most of the documents such a service would write per event.
        The inbox's purge still runs: it removes what an earlier version recorded.

        `before_scrape`: gauges read from the database each time `/metrics` is read, rather than on a
        timer, so a service that nobody scrapes (the embedded platform) spends nothing on them."""
        background = list(background)
        lag: ConsumerLagMonitor | None = None
        publishes = contract.PUBLISHES.get(self.name, {}) if publishes is None else publishes
        # A read model (insights) publishes nothing, so it runs no relay: no polls, no lease.
        relay_jobs, relay_chores = ((self.relay.run,), (self.relay.purge_sent,)) if publishes else ((), ())
        if subscriptions:
            consumer = EventConsumer(
                subscriptions,
                group=self.consumer_group,
                uow=self.uow,
                inbox=None if idempotent_handlers else self.inbox,
                broker=self.broker,
                dead_letters=self.dead_letters,
                metrics=self.metrics,
                max_attempts=self.settings.consumer_max_attempts,
                backoff_seconds=self.settings.consumer_retry_backoff_seconds,
                prefetch=prefetch,
            )
            consumer.subscribe(self.settings.consumer_batch_size)
            lag = ConsumerLagMonitor(
                self.settings.kafka_bootstrap_servers,
                self.consumer_group,
                consumer.topics,
                self.metrics,
                interval_seconds=self.settings.consumer_lag_interval_seconds,
            )

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
            await self.dead_letters.start()
            chores = (*relay_chores, lambda: self.uow.run(self.inbox.purge_expired), *housekeeping)
            tasks = [asyncio.create_task(job()) for job in (*relay_jobs, *background)]
            tasks.extend(asyncio.create_task(repeat(HOUSEKEEPING_INTERVAL_SECONDS, chore)()) for chore in chores)
            try:
                yield
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                if lag is not None:
                    await lag.close()
                await self.dead_letters.stop()
                await self.broker.stop()
                await self.mongo.close()
                if self.tracer_provider is not None:
                    self.tracer_provider.shutdown()

        app = FastAPI(
            title=f"Switchboard {self.name}",
            description=description,
            lifespan=lifespan,
            responses=problem_answers(413),  # BodySizeLimit guards every route
        )
        app.state.service_name = self.name
        asyncapi = self.asyncapi(description, subscriptions, publishes, idempotent_handlers)
        app.state.asyncapi = asyncapi  # what tools.asyncapi_export writes to deploy/asyncapi/
        install_http_conventions(app, self.metrics, self.settings.max_request_bytes)
        app.include_router(api)
        app.include_router(self._operations_routes(asyncapi, (*before_scrape, *([lag.refresh] if lag else []))))
        return app

    def _operations_routes(
        self, asyncapi: AsyncAPI, before_scrape: Sequence[Callable[[], Awaitable[None]]]
    ) -> APIRouter:
        routes = APIRouter(tags=["operations"])

        @routes.get("/health/live")
        async def live() -> Liveness:
            return Liveness(status="live")

        @routes.get(
            "/health/ready",
            response_model=Readiness,
            responses={503: {"model": Readiness, "description": "a dependency did not answer; `checks` says which"}},
        )
        async def ready() -> Readiness | JSONResponse:
            checks = {"mongodb": await self._mongo_ready(), "kafka": await self.broker.ping(timeout=2)}
            if all(checks.values()):
                return Readiness(status="ready", checks=checks)
            return JSONResponse(Readiness(status="not ready", checks=checks).model_dump(), status_code=503)

        # `response_class=Response` (no media type of its own) keeps the error answers documented as JSON.
        @routes.get("/metrics", response_class=Response, responses=_text("text/plain", "Prometheus text format"))
        async def metrics() -> Response:
            for refresh in before_scrape:
                try:
                    async with asyncio.timeout(SCRAPE_REFRESH_TIMEOUT_SECONDS):
                        await refresh()
                except Exception as error:  # MongoDB down: the gauges keep their last values, as Kafka's lag does
                    log.warning("could not refresh gauges for /metrics: %s: %s", type(error).__name__, error)
            return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

        @routes.get("/docs/asyncapi", response_class=Response, responses=_text("text/html", "the AsyncAPI page"))
        async def asyncapi_html() -> HTMLResponse:
            return HTMLResponse(get_asyncapi_html(asyncapi.to_specification()))

        @routes.get("/docs/asyncapi.json", responses=_json_object())
        async def asyncapi_json() -> JSONResponse:
            return JSONResponse(asyncapi.to_specification().to_jsonable())

        return routes

    def asyncapi(
        self,
        description: str,
        subscriptions: Sequence[Subscription],
        publishes: Mapping[str, Sequence[type]],
        idempotent_handlers: bool = False,
    ) -> AsyncAPI:
        """The service's event contract: each topic it consumes (with the event types it handles) and
        each it publishes, with CloudEvents envelope schemas per event type.

        Built on a broker of its own that is never started: the real consumer is one batch
        subscriber across all topics (so its signature says nothing about payloads), and the
        outbox publishes without declared publishers.
        """
        docs = KafkaBroker(self.settings.kafka_bootstrap_servers, client_id=f"switchboard-{self.name}")
        seen_again = "is applied again and changes nothing" if idempotent_handlers else "is a duplicate and is skipped"
        for subscription in subscriptions:
            payloads = tuple(subscription.handlers)
            schema = contract.message_schema(payloads)

            async def handle(event: schema) -> None:  # documentation only; never called
                """"""

            docs.subscriber(
                subscription.topic,
                group_id=self.consumer_group,
                title=f"{subscription.topic}:{self.consumer_group}",
                description=f"{self.consumer_group} consumes "
                + ", ".join(payload.EVENT_TYPE for payload in payloads)
                + "; other types are ignored. It reads CloudEvents in either Kafka content mode: structured (the "
                "whole event as the value, `content-type: application/cloudevents+json`) or binary (`data` as the value, "
                "the other attributes in `ce_` headers). `specversion`, `id`, `source` and `type` are required; an event "
                f"with the `source` and `id` of one processed before {seen_again}. Messages it cannot "
                f"process go to {topics.dead_letter(subscription.topic)}, whole, with the reason in `dlq-*` headers.",
            )(handle)
        for topic, payloads in publishes.items():
            docs.publisher(
                topic,
                title=topic,
                schema=contract.message_schema(tuple(payloads)),
                description=f"switchboard-{self.name} publishes "
                + ", ".join(payload.EVENT_TYPE for payload in payloads)
                + " (CloudEvents in structured mode, or binary mode with `CLOUDEVENTS_MODE=binary`; the Kafka key is "
                "the event's subject).",
            )
        return AsyncAPI(docs, title=f"Switchboard {self.name}", version="1.0.0", description=description)

    async def _mongo_ready(self) -> bool:
        try:
            await asyncio.wait_for(self.mongo.admin.command("ping"), timeout=2)
        except Exception:
            return False
        return True


def _json_object() -> dict:
    return {200: {"content": {"application/json": {"schema": {"type": "object"}}}}}


def _text(media_type: str, description: str) -> dict:
    return {200: {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}}


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


def build_and_serve(service: str, build: Callable[[], FastAPI], settings: ServiceSettings, *, rules: str) -> None:
    """`serve` what `build` makes; a wrong `rules` file stops the service first, with exit code 2 and
    `<service> cannot start: invalid <rules>: <file>:<line>: <reason>`."""
    try:
        app = build()
    except RulesFileError as invalid:
        print(f"{service} cannot start: invalid {rules}: {invalid}", file=sys.stderr)
        sys.exit(2)
    serve(app, settings)


KEEP_ALIVE_SECONDS = 75
"""How long an idle client connection stays open (uvicorn's default is 5 s). A client that reuses a
connection just as the server closes it gets a dropped request, which a POST cannot safely retry;
httpx also drops idle connections at 5 s, so the two raced (the pipeline benchmark lost 1-3 of 200
POSTs to it). Clients and proxies keep connections for less than this (httpx 5 s, aiohttp 15 s,
AWS load balancers 60 s), so they always close first, as nginx's 75 s default intends."""


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    """Run one service in this process until SIGTERM or Ctrl-C."""
    configure_logging(
        getattr(app.state, "service_name", "switchboard"), level=settings.log_level, fmt=settings.log_format
    )
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        access_log=False,
        log_level="warning",
        log_config=None,  # uvicorn's own lines go through the JSON handler too
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
    _out_of_the_collectors_sight()
    _UnhurriedServer(config).run()


def _out_of_the_collectors_sight() -> None:
    """What the service has built by now (modules, models, templates, rules) lives as long as the
    process, yet each of Python's full collections walked all of it again: about 120,000 objects,
    about 0.1 s a time under a burst. Frozen (`gc.freeze`), they are no longer walked: 10,000-30,000
    objects are left, and a full collection takes about a third as long. What the service allocates
    from now on is collected as before. (`benchmarks.pipeline`, two pairs: the five services' time
    in the collector over the run 549 and 587 ms, against 1,560 and 711.)"""
    gc.collect()
    gc.freeze()


class _UnhurriedServer(uvicorn.Server):
    """uvicorn wakes ten times a second to look for a stop request and to refresh its Date header. Once
    a second does both, and an idle service burns less CPU; a stop starts at most a second later."""

    async def main_loop(self) -> None:
        ticks = 0
        while not await self.on_tick(ticks):
            ticks += 10  # uvicorn counts tenths of a second
            await asyncio.sleep(1.0)
