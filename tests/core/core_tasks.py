"""Task functions for the core tests. Module-level so that worker children (process
executor) can import them by name."""

from __future__ import annotations

import asyncio
import os
import time

from chancy import Retry, current_job


def add(a, b):
    return a + b


def echo(*args, **kwargs):
    return {"args": list(args), "kwargs": kwargs}


async def async_add(a, b):
    await asyncio.sleep(0)
    return a + b


def fail(message="boom"):
    raise ValueError(message)


def fail_until_attempt(n):
    """Fails on every attempt before the n-th."""
    attempt = current_job.get().attempts
    if attempt < n:
        raise RuntimeError(f"attempt {attempt} fails")
    return attempt


def retry_with_countdown(countdown):
    if current_job.get().attempts == 1:
        raise Retry(countdown=countdown)
    return "retried"


def sleep(seconds):
    time.sleep(seconds)
    return seconds


def mark_and_sleep(path, seconds):
    """Sleep, once the file at ``path`` says the task has begun (a row's ``running`` state
    only says it was claimed: a process-pool child may not have taken it yet)."""
    with open(path, "w"):
        pass
    time.sleep(seconds)
    return seconds


async def async_sleep(seconds):
    await asyncio.sleep(seconds)
    return seconds


def getpid():
    return os.getpid()


def allocate(megabytes, hold_seconds=5):
    block = bytearray(megabytes * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(hold_seconds)
    return len(block)


def record_order(tag):
    return tag


def unserialisable_result():
    return object()
