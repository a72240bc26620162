"""Task functions for tests/test_executors.py, at module level so that the process
executor's children can import them by name."""

from __future__ import annotations

import asyncio
import inspect
import multiprocessing
import os
import time
from pathlib import Path


def add(a: int, b: int) -> int:
    return a + b


async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


def fail(message: str) -> None:
    raise ValueError(message)


def getpid() -> int:
    return os.getpid()


def environ_value(name: str) -> str | None:
    return os.environ.get(name)


def exit_now(code: int) -> None:
    os._exit(code)


def wait_for_file(path: str, timeout: float = 10.0) -> str:
    """Blocks until ``path`` exists: lets a test hold a job running, in any executor."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.01)
    return "released"


def write_later(path: str, seconds: float) -> str:
    """Writes ``path`` after ``seconds``, sleeping in short steps (pure Python between
    them). Like the two below, it first writes ``path.started``."""
    Path(path + ".started").touch()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.01)
    Path(path).write_text("written")
    return "written"


def blocking_write_later(path: str, seconds: float) -> str:
    """Writes ``path`` after one blocking C call of ``seconds``."""
    Path(path + ".started").touch()
    time.sleep(seconds)
    Path(path).write_text("written")
    return "written"


async def async_write_later(path: str, seconds: float) -> str:
    Path(path + ".started").touch()
    await asyncio.sleep(seconds)
    Path(path).write_text("written")
    return "written"


def allocate(megabytes: int, hold_seconds: float) -> int:
    """Touches ``megabytes`` of memory, then holds it."""
    blocks = [bytearray(1024 * 1024) for _ in range(megabytes)]
    time.sleep(hold_seconds)
    return len(blocks)


def start_a_process() -> int | None:
    """Tasks in the process executor may start processes of their own."""
    process = multiprocessing.get_context("fork").Process(target=os.getpid)
    process.start()
    process.join()
    return process.exitcode


def _register_every_function() -> None:
    """Register each function here under its ``module.name``, as ``@chancy.task`` would: a
    worker runs registered tasks only, and process-pool children import this module again."""
    from chancy.execution import registry
    from chancy.job import task_name

    here = globals()
    registry.update({task_name(func): func for func in list(here.values())
                     if inspect.isfunction(func) and func.__module__ == __name__ and not func.__name__.startswith("_")})


_register_every_function()
