"""``python -m benchmarks [--quick | --smoke] [--dsn DSN] [--only PART ...]``

Parts: raw, enqueue, drain, latency, peers (procrastinate, pgqueuer) and celery (Celery
workers on Redis and on Chancy's broker beside ``chancy worker``'s process and thread
pools; needs ``redis-server`` for the Redis peers, skipped with a note without it).

Without ``--dsn`` a private, durable Postgres is started (``chancy.embedded``) and
stopped at the end. ``--dsn`` must be allowed to CREATE DATABASE: every measurement runs
in a fresh database, created and dropped around it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator, Sequence

from benchmarks import celery_peers, drain, enqueue, environment, keys, latency, peers, raw, scale
from benchmarks.harness import SIZES, Run

PARTS = {"raw": raw.measure, "enqueue": enqueue.measure, "drain": drain.measure,
         "latency": latency.measure, "peers": peers.measure, "celery": celery_peers.measure,
         "scale": scale.measure, "keys": keys.measure}
RESULTS = Path(__file__).resolve().parent / "results"


@contextlib.contextmanager
def server(dsn: str | None, fast: bool) -> Iterator[tuple[str, str]]:
    if dsn:
        yield dsn, "given with --dsn"
        return
    from chancy.embedded import start_throwaway_server

    with start_throwaway_server(fast=fast) as embedded:
        yield embedded.admin_dsn, "embedded throwaway" + (", durability off (--fast)" if fast else "")


async def run_parts(run: Run, parts: Sequence[str]) -> None:
    for part in parts:
        await PARTS[part](run)


def main(argv: Sequence[str] | None = None) -> Run:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", const="quick", dest="size", help="smaller sizes (~6 min)")
    size.add_argument("--smoke", action="store_const", const="smoke", dest="size",
                      help="tiny sizes that only prove the suite runs")
    parser.add_argument("--dsn", help="a Postgres DSN allowed to CREATE DATABASE (default: embedded server)")
    parser.add_argument("--fast", action="store_true",
                        help="embedded server without durability (fsync off): not what users run")
    parser.add_argument("--only", nargs="+", choices=list(PARTS), default=list(PARTS), help="parts to run")
    parser.add_argument("--repeat", type=int, help="override the number of repetitions")
    parser.add_argument("--results", type=Path, default=RESULTS, help="directory for the JSON result")
    args = parser.parse_args(argv)
    sizes = SIZES[args.size or "full"]
    if args.repeat:
        if args.repeat < 1:
            parser.error("--repeat must be at least 1")
        sizes = type(sizes)(**{**sizes.__dict__, "repeat": args.repeat})
    parts = [part for part in PARTS if part in args.only]  # raw first: ratios need it
    with server(args.dsn, args.fast) as (dsn, origin):
        env = environment.describe(dsn, origin)
        print(environment.summary(env), flush=True)
        run = Run(dsn, sizes, log=lambda line: print(line, flush=True))
        asyncio.run(run_parts(run, parts))
    print()
    print(run.table())
    print("load average at end: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    path = run.write_json(args.results, env)
    print(f"\nJSON: {path}")
    return run


if __name__ == "__main__":
    main(sys.argv[1:])
