"""The worker's services beside its producers: the heartbeat, the runtime settings of its
queues, and its seat of leader (the leader-only plugins it runs while it holds it)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from typing import Awaitable, Callable, Iterable, Sequence

from chancy.plugin import Plugin, WorkerContext
from chancy.queue import QueuePlugin
from chancy.store.cluster import ClusterStore
from chancy.worker.producer import QueueProducer

log = logging.getLogger("chancy.worker")


class Heartbeat:
    """Registers the worker and keeps it alive on the database clock; a job the database
    says is no longer the worker's (cancelled, or recovered while it was cut off) is
    stopped with ``lose``."""

    def __init__(self, cluster: ClusterStore, worker_id: str, queues: Sequence[QueuePlugin], tags: Sequence[str],
                 interval: float, liveness_timeout: float, running: Callable[[], list[uuid.UUID]],
                 lose: Callable[[uuid.UUID], None], producers: Callable[[], Iterable[QueueProducer]]) -> None:
        self.cluster = cluster
        self.worker_id = worker_id
        self.queues = queues  # the worker's list: queues declared at runtime join it
        self.tags = list(tags)
        self.interval = interval
        self.liveness_timeout = liveness_timeout
        self._running = running
        self._lose = lose
        self._producers = producers

    async def beat(self) -> None:
        lost = await self.cluster.heartbeat(
            self.worker_id, hostname=socket.gethostname(), pid=os.getpid(), queues=[q.name for q in self.queues],
            tags=self.tags, running=self._running(), ttl=self.liveness_timeout,
        )
        for job_id in lost:
            log.warning("job %s was cancelled or taken away while running here; stopping it", job_id)
            self._lose(job_id)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            for producer in self._producers():  # a lost claim answer goes unnoticed otherwise
                producer.reconcile = True
            try:
                await self.beat()
            except Exception as exc:  # noqa: BLE001 - keep running through outages
                log.warning("heartbeat failed (%s)", exc)

    async def deregister(self) -> None:
        try:
            await self.cluster.deregister(self.worker_id)
        except Exception as exc:  # noqa: BLE001
            log.warning("could not deregister worker (%s)", exc)


class QueueSettings:
    """Applies the runtime settings of the worker's queues (pause, concurrency cap:
    :class:`~chancy.plugins.queues.QueueAdmin`), re-read every ``interval`` seconds and at
    once on a change; with ``serves_declared``, also starts (``serve``) and retires the
    queues declared at runtime."""

    def __init__(self, cluster: ClusterStore, producers: dict[str, QueueProducer], serves_declared: bool,
                 interval: float, serve: Callable[[str], Awaitable[QueueProducer]]) -> None:
        self.cluster = cluster
        self._producers = producers
        self.serves_declared = serves_declared
        self.interval = interval
        self._serve = serve
        #: Set by a NOTIFY that settings changed (or a reconnect): read them now.
        self.changed = asyncio.Event()

    async def load(self) -> None:
        producers = list(self._producers.values())
        names = None if self.serves_declared else [p.queue.name for p in producers]
        rows = {row.name: row for row in await self.cluster.queue_settings(names)}
        for name in rows.keys() - self._producers.keys():
            producers.append(await self._serve(name))
        for producer in producers:
            row = rows.get(producer.queue.name)
            if producer.declared:
                if row is None:
                    producer.retired = True
                    producer.wake.set()
                    continue
                producer.executor.concurrency = row.concurrency or 1  # its executor has no fixed pool
            paused_until = row.paused_until if row else None
            cap = row.concurrency if row else None
            if (paused_until, cap) != (producer.paused_until, producer.concurrency_cap):
                log.info("queue %r: %s, concurrency %s", producer.queue.name,
                         f"paused until {paused_until:%Y-%m-%d %H:%M:%S}" if paused_until else "running",
                         cap or producer.executor.concurrency)
                producer.paused_until, producer.concurrency_cap = paused_until, cap
                producer.wake.set()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self.changed.wait()
            self.changed.clear()
            try:
                await self.load()
            except Exception as exc:  # noqa: BLE001 - keep the last known settings through outages
                log.warning("reading queue settings failed (%s)", exc)


class LeaderSeat:
    """Whether the worker leads, and the leader-only plugins it runs while it does."""

    def __init__(self, plugins: Sequence[Plugin]) -> None:
        self._plugins = plugins
        self.is_leader = False
        self.tasks: list[asyncio.Task] = []

    def set(self, is_leader: bool, context: WorkerContext) -> None:
        """Start (True) or stop (False) the leader-only plugins, each run with ``context``."""
        if is_leader == self.is_leader:
            return
        self.is_leader = is_leader
        if is_leader:
            loop = asyncio.get_running_loop()
            self.tasks = [loop.create_task(p.run(context), name=f"chancy-leader-{type(p).__name__}")
                          for p in self._plugins if p.leader_only]
        else:
            for task in self.tasks:
                task.cancel()
            self.tasks = []
