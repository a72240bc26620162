"""Which store an app's cluster state and job queries live in: its Postgres store's, or,
when the app keeps its jobs in this process (inside :func:`chancy.testing.in_memory`, or
built with in-memory queues only), the in-memory store's."""

from __future__ import annotations

from typing import Any, Iterable

from chancy.queue import QueuePlugin
from chancy.store.cluster import ClusterStore
from chancy.store.memory import MemoryQueue
from chancy.store.memory_cluster import memory_cluster
from chancy.store.memory_queries import MemoryJobQueries
from chancy.store.queries import JobQueries


def keeps_jobs_in_memory(app: Any) -> bool:
    """Whether ``app`` (a :class:`chancy.Chancy`) keeps its jobs in this process."""
    if "queue" in vars(app):  # chancy.testing.in_memory() serves every queue name from memory
        return True
    return bool(app.queues) and all(isinstance(q, MemoryQueue) for q in app.queues.values())


def cluster_of(app: Any) -> ClusterStore:
    """The cluster facet of the store ``app`` keeps its jobs in."""
    return memory_cluster(app) if keeps_jobs_in_memory(app) else app.store.cluster


def cluster_for(app: Any, queues: Iterable[QueuePlugin]) -> ClusterStore:
    """The cluster facet a worker serving ``queues`` shares: Postgres's if any of them is
    not in memory."""
    return app.store.cluster if any(not isinstance(q, MemoryQueue) for q in queues) else memory_cluster(app)


def queries_of(app: Any) -> JobQueries:
    """Reading the jobs of the store ``app`` keeps its jobs in."""
    return MemoryJobQueries(app) if keeps_jobs_in_memory(app) else app.store.queries
