"""A worker process for the cluster tests: ``python -m cluster_worker DSN [options]``.

Short heartbeat, liveness and leadership intervals so that crashes are noticed within
about a second; prints ``ready`` once serving."""

import argparse
import asyncio
import logging

from chancy import Chancy, Queue, Worker
from chancy.plugins.cron import Cron
from chancy.plugins.leadership import Leadership
from chancy.plugins.recovery import Recovery


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--heartbeat", type=float, default=0.2)
    parser.add_argument("--liveness", type=float, default=1.0)
    parser.add_argument("--leadership", type=float, default=0.2)
    parser.add_argument("--cron", action="store_true")
    return parser.parse_args()


async def main(args: argparse.Namespace) -> None:
    plugins = [Queue("default", concurrency=args.concurrency, executor="asyncio", polling_interval=0.5),
               Leadership(interval=args.leadership), Recovery(interval=0.3)]
    if args.cron:
        plugins.append(Cron(interval=0.2))
    app = Chancy(args.dsn, plugins=plugins, max_connections=6)
    async with app:
        worker = Worker(app, heartbeat_interval=args.heartbeat, liveness_timeout=args.liveness,
                        settings_interval=1.0, shutdown_timeout=5.0)
        task = asyncio.create_task(worker.start())
        await worker.wait_until_ready()
        print("ready", worker.worker_id, flush=True)
        await task


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(process)d %(name)s %(message)s")
    asyncio.run(main(parse()))
