"""Tasks run by the cluster tests' worker processes."""

import asyncio
import os
import signal


async def noop(i: int) -> int:
    await asyncio.sleep(0.005)
    return i


async def kill_my_worker() -> None:
    """A job that crashes whatever runs it, every time."""
    os.kill(os.getpid(), signal.SIGKILL)


async def slow(i: int) -> int:
    await asyncio.sleep(0.2)
    return i


async def sleepy(seconds: float) -> None:
    await asyncio.sleep(seconds)
