"""One pushing client process for the concurrent enqueue figures:
``python -m benchmarks.pusher DSN KIND N`` with KIND ``raw`` (the raw single-row INSERT)
or ``chancy`` (``task.push_sync``). It connects and pushes once, prints ``ready``, waits
for a line on stdin, pushes N jobs one at a time and prints ``done``: the parent's clock
runs from releasing every client at once to the last ``done``, without start-up costs."""

from __future__ import annotations

import sys
from typing import Callable

import psycopg

from benchmarks import raw, tasks
from chancy import Chancy, Queue


def pusher(dsn: str, kind: str) -> Callable[[int], object]:
    if kind == "raw":
        conn = psycopg.connect(dsn, autocommit=True)
        return lambda i: conn.execute(raw.INSERT_ONE, ("default", raw.FUNC, f"[{i}]"))
    if kind == "chancy":
        app = Chancy(dsn, plugins=[Queue("default")], min_connections=1, max_connections=1)
        app.__enter__()  # the process exits when done: nothing to close
        return app.task(tasks.noop).push_sync
    raise SystemExit(f"unknown pusher kind {kind!r}: use raw or chancy")


def main(dsn: str, kind: str, n: int) -> None:
    push = pusher(dsn, kind)
    push(-1)
    print("ready", flush=True)
    sys.stdin.readline()
    for i in range(n):
        push(i)
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
