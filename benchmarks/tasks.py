"""The tasks the benchmarks run. Importable by name, so process-executor children and
peer workers find them without an app object."""

from __future__ import annotations

import time


async def noop(*args: object) -> None:
    """A coroutine that does nothing: the asyncio executor's cost per job, no more."""


def noop_sync(*args: object) -> None:
    """A plain function that does nothing: the process executor's cost per job."""


async def stamp(*args: object) -> float:
    """Returns the wall-clock time at which execution started (for pickup latency)."""
    return time.time()
