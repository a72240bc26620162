"""Tasks for the dashboard tests (module-level, so a worker finds them by name)."""

from __future__ import annotations

import asyncio

#: Names of "repairable" jobs' switches: a job fails while its switch is off.
REPAIRED: set[str] = set()


def add(a, b):
    return a + b


def fail(message="boom"):
    raise ValueError(message)


def fails_until_repaired(switch):
    """Fails (with a traceback naming ``switch``) until the test sets the switch."""
    if switch not in REPAIRED:
        raise RuntimeError(f"{switch} is broken")
    return f"{switch} fixed"


async def sleep(seconds):
    await asyncio.sleep(seconds)
    return seconds
