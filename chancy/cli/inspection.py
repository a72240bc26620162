"""``chancy inspect``: Celery's ``celery inspect``, answered by the database.

Celery asks live workers over the broker and waits for replies; here the job rows and the
workers' heartbeats already say what each worker runs, so the answer is immediate and
includes workers too busy to reply. A worker "replies" when its heartbeat is current.
Output is shaped like Celery's (``-> worker: OK`` headings); ``--json`` gives the same
data keyed like Celery's ``--json`` output."""

from __future__ import annotations

import dataclasses
import functools
import json
from datetime import datetime
from typing import Any, Callable, Iterable

import click

from chancy.cli.admin import split_queues
from chancy.cli.common import CliError, ExitCode, Target, json_option, target_options
from chancy.cli.loading import task_names
from chancy.cli.output import age, emit_json, when
from chancy.job import JobRecord
from chancy.store.admin import WorkerRow

#: How much of a job's arguments a line shows.
ARGS_WIDTH = 100


@dataclasses.dataclass(frozen=True)
class Filters:
    """``-d/--destination`` (worker ids) and ``-Q/--queues``, Celery's comma-separated form."""

    workers: list[str] | None
    queues: list[str] | None

    def admits(self, worker: WorkerRow) -> bool:
        """A live worker that is one of the destinations and serves one of the queues."""
        return (worker["alive"] and (self.workers is None or worker["worker_id"] in self.workers)
                and (self.queues is None or bool(set(self.queues) & set(worker["queues"]))))

    def describe(self) -> str:
        parts = ([f"-d {','.join(self.workers)}"] if self.workers else []) + (
            [f"-Q {','.join(self.queues)}"] if self.queues else [])
        return f" matching {' '.join(parts)}" if parts else ""


def _names(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    return split_queues(value)


def _filter_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("-Q", "--queues", "queues", callback=_names, metavar="A,B",
                        help="Only jobs of these queues, and workers serving one of them.")(func)
    func = click.option("-d", "--destination", "workers", callback=_names, metavar="WORKER,…",
                        help="Only these workers (ids as `chancy status` shows them).")(func)
    return func


def _timeout_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """Celery's ``-t/--timeout`` (how long to wait for replies): here, how long to wait for
    the database, so a probe such as ``inspect ping -t 5`` fails in bounded time."""

    @click.option("-t", "--timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
                  help="Give up (exit 4) if the database does not answer within this time.")
    @functools.wraps(func)
    def wrapper(target: Target, timeout: float | None, **kwargs: Any) -> Any:
        target.timeout = timeout
        return func(target=target, **kwargs)

    return wrapper


def _live_workers(target: Target, filters: Filters) -> list[WorkerRow]:
    """The workers with a current heartbeat that pass the filters; none is an error, as
    when no Celery worker replies."""
    target.require_schema()
    workers = [w for w in target.run(target.app.store.admin.workers()) if filters.admits(w)]
    if not workers:
        raise CliError(f"no live worker{filters.describe()}: none has a current heartbeat in this database "
                       f"(prefix {target.app.names.prefix!r})", ExitCode.NOT_FOUND)
    return workers


def _call(record: JobRecord) -> str:
    """``task(1, 'a', x=2)``, cut to a readable width."""
    args = [json.dumps(a, default=repr) for a in record.args]
    args += [f"{k}={json.dumps(v, default=repr)}" for k, v in record.kwargs.items()]
    text = ", ".join(args)
    return f"{record.func}({text if len(text) <= ARGS_WIDTH else text[:ARGS_WIDTH - 1] + '…'})"


def _request(record: JobRecord) -> dict[str, Any]:
    """A job as Celery's inspect replies describe a task request."""
    return {"id": str(record.id), "name": record.func, "args": list(record.args), "kwargs": record.kwargs,
            "queue": record.queue, "priority": record.priority, "hostname": record.taken_by,
            "time_start": record.started_at.timestamp() if record.started_at else None,
            "attempt": record.attempts, "max_attempts": record.max_attempts}


def _print_groups(groups: Iterable[tuple[str, list[str]]]) -> None:
    """Celery's layout: ``-> name: OK`` (or another status), then one line per item."""
    for heading, lines in groups:
        click.echo(f"-> {heading}")
        for line in lines or ["- empty -"]:
            click.echo(f"    {line}")


def _nodes_online(count: int) -> None:
    click.echo(f"\n{count} node{'s' if count != 1 else ''} online.")


@click.group()
def inspect() -> None:
    """What the workers are doing, like `celery inspect` (read from the database).

    \b
    chancy inspect active -A proj          running jobs, by worker
    chancy inspect scheduled -Q emails     jobs due later (countdown, eta, retry), by queue
    chancy inspect registered -A proj      the app's task names
    chancy inspect ping -d worker-1        exit 0 if that worker's heartbeat is current
    chancy inspect stats                   each worker's pid, queues, uptime, heartbeat
    chancy inspect reserved                jobs claimed ahead (prefetched), not started yet
    """


@inspect.command()
@_filter_options
@target_options
@_timeout_option
@json_option
def active(target: Target, workers: list[str] | None, queues: list[str] | None, as_json: bool) -> None:
    """Running jobs, grouped by the worker that holds them (id, task, arguments, start,
    attempt). Jobs still held by a worker whose heartbeat stopped are listed under it,
    marked as such, until the leader recovers them."""
    _held(target, Filters(workers, queues), started=True, as_json=as_json)


def _held(target: Target, filters: Filters, *, started: bool, as_json: bool) -> None:
    """The jobs workers hold, by worker: those they started (``active``), or those they
    claimed ahead and have not started yet (``reserved``: their prefetch)."""
    live = _live_workers(target, filters)
    records = target.run(target.app.store.admin.running(queues=filters.queues, workers=filters.workers))
    by_worker: dict[str, list[JobRecord]] = {w["worker_id"]: [] for w in live}
    for record in records:
        if (record.started_at is not None) == started:
            by_worker.setdefault(record.taken_by or "?", []).append(record)
    if as_json:
        emit_json({worker: [_request(r) for r in held] for worker, held in by_worker.items()})
        return
    alive = {w["worker_id"] for w in live}
    _print_groups(
        (f"{worker}: OK" if worker in alive
         else f"{worker}: NO HEARTBEAT (presumed dead; the leader recovers its jobs)",
         [f"* {r.id} {_call(r)} queue {r.queue}, "
          + (f"started {when(r.started_at)}, " if started else "")
          + f"attempt {r.attempts}/{r.max_attempts}" for r in held])
        for worker, held in by_worker.items())
    _nodes_online(len(live))


@inspect.command()
@click.option("-Q", "--queues", "queues", callback=_names, metavar="A,B", help="Only jobs of these queues.")
@click.option("-n", "--limit", type=click.IntRange(min=1), default=100, show_default=True,
              help="At most this many jobs (soonest first).")
@target_options
@_timeout_option
@json_option
def scheduled(target: Target, queues: list[str] | None, limit: int, as_json: bool) -> None:
    """Jobs waiting for a later time — a countdown, an eta, a retry's backoff — grouped by
    queue, soonest first. (No worker holds them before they are due.)"""
    target.require_schema()
    records = target.run(target.app.store.admin.scheduled(queues=queues, limit=limit))
    by_queue: dict[str, list[JobRecord]] = {}
    for record in records:
        by_queue.setdefault(record.queue, []).append(record)
    if as_json:
        emit_json({queue: [{"eta": r.scheduled_at, "priority": r.priority, "request": _request(r)} for r in jobs]
                   for queue, jobs in by_queue.items()})
        return
    if not records:
        click.echo("- empty -")
        return
    _print_groups((f"queue {queue}: OK", [f"* {r.id} {_call(r)} eta {when(r.scheduled_at)}, priority {r.priority}"
                                      + (f", retry {r.attempts + 1}/{r.max_attempts}" if r.attempts else "")
                                      for r in jobs])
                  for queue, jobs in by_queue.items())
    if len(records) == limit:
        click.echo(f"\n(the first {limit}; --limit shows more)")


@inspect.command()
@_filter_options
@target_options
@_timeout_option
@json_option
def reserved(target: Target, workers: list[str] | None, queues: list[str] | None, as_json: bool) -> None:
    """Jobs a worker has claimed ahead and not started yet (its prefetch, up to
    --prefetch-multiplier x concurrency per queue), by worker. They go back to the queue,
    their attempt unused, if the worker stops or dies before starting them."""
    _held(target, Filters(workers, queues), started=False, as_json=as_json)


@inspect.command()
@click.option("-d", "--destination", "workers", callback=_names, metavar="WORKER,…", hidden=True)
@target_options
@_timeout_option
@json_option
def registered(target: Target, workers: list[str] | None, as_json: bool) -> None:
    """The task names the -A app registers (after its include/imports and autodiscovery).

    Workers do not record their task registry in the database, so this lists the code
    given with -A, not what a given worker loaded: run it with the workers' code."""
    if workers:
        raise click.UsageError("workers do not record their registered tasks; `inspect registered` lists the "
                               "-A app's, so -d does not apply")
    if target.app_spec is None:
        raise click.UsageError("give the app whose tasks to list: chancy inspect registered -A proj")
    names = task_names(target.app_object)
    if as_json:
        emit_json({target.app_spec: names})
        return
    _print_groups([(f"{target.app_spec}: OK", [f"* {name}" for name in names])])


@inspect.command()
@_filter_options
@target_options
@_timeout_option
@json_option
def ping(target: Target, workers: list[str] | None, queues: list[str] | None, as_json: bool) -> None:
    """Each live worker answers pong: its heartbeat is current. Exits 6 when no worker
    matches, so `chancy inspect ping -d NAME` is a liveness probe."""
    live = _live_workers(target, Filters(workers, queues))
    if as_json:
        emit_json({w["worker_id"]: {"ok": "pong"} for w in live})
        return
    _print_groups((f"{w['worker_id']}: OK", ["    pong"]) for w in live)
    _nodes_online(len(live))


@inspect.command()
@_filter_options
@target_options
@_timeout_option
@json_option
def stats(target: Target, workers: list[str] | None, queues: list[str] | None, as_json: bool) -> None:
    """Each live worker's host, pid, queues, uptime, heartbeat age and running jobs."""
    live = _live_workers(target, Filters(workers, queues))
    if as_json:
        emit_json({w["worker_id"]: _stats(w) for w in live})
        return
    _print_groups((f"{w['worker_id']}: OK", [f"{key}: {value}" for key, value in _stats(w, readable=True).items()])
                  for w in live)
    _nodes_online(len(live))


def _stats(worker: WorkerRow, readable: bool = False) -> dict[str, Any]:
    started: datetime = worker["started_at"]
    return {
        "hostname": worker["hostname"], "pid": worker["pid"],
        "queues": ",".join(worker["queues"]) if readable else worker["queues"],
        "started": when(started) if readable else started,
        "uptime": age(worker["uptime"]) if readable else worker["uptime"],
        "heartbeat_age": age(worker["heartbeat_age"]) if readable else worker["heartbeat_age"],
        "running": worker["running"],
    }
