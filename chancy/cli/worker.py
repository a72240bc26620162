"""``chancy worker``: run a worker for a native or a Celery-style app, with Celery's flags."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from typing import TYPE_CHECKING, Any, Iterator, NoReturn

import click

from chancy import execution, logs, stdio
from chancy.app import Chancy
from chancy.cli.admin import split_queues
from chancy.cli.common import CliError, ExitCode, Target, target_options
from chancy.cli.loading import core_app
from chancy.cli.output import safe_dsn
from chancy.errors import ConfigurationError
from chancy.faults import wait_until_reachable
from chancy.executors.process import NO_CHILD_LIMITS, ChildLimits
from chancy.queue import EXECUTOR_ALIASES, ExecutorFactory
from chancy.queues.pg import Queue
from chancy.redaction import redact
from chancy.worker import DEFAULT_PREFETCH_MULTIPLIER, Worker

if TYPE_CHECKING:
    from chancy.observability.prometheus import WorkerMetrics

POOLS = sorted(EXECUTOR_ALIASES)


def executor_for(pool: str | None, limits: ChildLimits) -> ExecutorFactory | str | None:
    """The executor a ``-P`` pool name (and the per-child limits) stands for."""
    if limits:
        if pool is not None and EXECUTOR_ALIASES[pool] != EXECUTOR_ALIASES["process"]:
            raise click.UsageError("--max-tasks-per-child and --max-memory-per-child apply to the process "
                                   "pool (-P process)")
        return limits.executor
    return pool


def configure_queues(
    app: Chancy, names: list[str] | None, concurrency: int | None, pool: str | None,
    limits: ChildLimits = NO_CHILD_LIMITS,
) -> list[str]:
    """Declare or adjust the queues this worker serves; returns their names.

    A queue named with ``-Q`` that the app does not declare is added as a Postgres queue;
    ``-c``/``-P`` override the settings of each queue served (``-P solo`` runs one job at
    a time)."""
    names = names or list(app.queues) or ["default"]
    executor = executor_for(pool, limits)
    if pool == "solo":
        concurrency = 1
    for name in names:
        declared = app.queues.get(name)
        if declared is not None and not (concurrency or executor):
            continue
        if declared is not None and not isinstance(declared, Queue):
            raise ConfigurationError(f"-c/-P can only change Postgres queues; {name!r} is a {type(declared).__name__}")
        queue = Queue(
            name,
            concurrency=concurrency or (declared.concurrency if declared else 1),
            executor=executor or (declared.executor_factory if declared else "asyncio"),
            polling_interval=declared.polling_interval if declared else 1.0,
            fair_keys=declared.fair_keys if declared else False,
        )
        queue.bind(app)
        app.queues[name] = queue
    return names


def _worker_app(obj: Any, names: list[str] | None, concurrency: int | None, pool: str | None,
                limits: ChildLimits) -> tuple[Chancy, list[str]]:
    """The core app to run and the queues to serve, for a native or a Celery-style app."""
    app = core_app(obj)
    assert app is not None
    if isinstance(obj, Chancy):
        return app, configure_queues(app, names, concurrency, pool, limits)
    from chancy.compat import worker_app

    if limits and pool is not None:
        executor_for(pool, limits)  # the same usage error as for a native app
    app = worker_app(obj, names, concurrency, pool, limits)
    return app, names or list(app.queues)


def _output(obj: Any, loglevel: str, log_format: str) -> stdio.WorkerOutput:
    """How the worker logs, and where its tasks' print() goes: for a Celery-style app, to
    the log as ``worker_redirect_stdouts`` says (Celery's default: on, at WARNING); a native
    app's stays on stdout/stderr (line-buffered, so that it shows as it happens)."""
    if isinstance(obj, Chancy):
        return stdio.WorkerOutput(loglevel, log_format, redirect_level=None)
    from chancy.compat.worker import redirect_level

    return stdio.WorkerOutput(loglevel, log_format, redirect_level=redirect_level(obj))


def enable_beat(app: Chancy) -> None:
    """Run the cron plugin on this worker (``-B``), unless the app already has it."""
    from chancy.plugins.cron import Cron

    if not any(isinstance(plugin, Cron) for plugin in app.plugins):
        app.add_plugin(Cron())


def expand_node_name(template: str, host: str) -> str:
    """Celery's ``-n`` expansions, so ``-n celery@%h`` names a worker as Celery would (and a
    probe's ``inspect ping -d celery@$HOSTNAME`` finds it)."""
    name, _, domain = host.partition(".")
    return template.replace("%h", host).replace("%n", name).replace("%d", domain)


def _check_unique_id(target: Target, worker_id: str) -> None:
    for row in target.run(target.app.store.admin.workers()):
        if row["worker_id"] == worker_id and row["alive"]:
            raise CliError(
                f"a worker named {worker_id!r} is already running on {row['hostname']} (pid {row['pid']}); "
                "give this one another -n name", ExitCode.CONFLICT)


def _banner(app: Chancy, names: list[str], worker_id: str | None, pool: str | None, beat: bool,
            allowed: tuple[str, ...]) -> str:
    from chancy.store.pg.server import server_info

    server = server_info(app.dsn)
    lines = [f"chancy worker {worker_id or '(id chosen at start)'}",
             f"  postgres {server['server_version']}: {safe_dsn(app.dsn)}",
             f"  tables   {app.names.prefix}*"]
    lines += [f"  queue    {name}: concurrency {app.queues[name].concurrency}, executor {pool or 'as declared'}"
              for name in names]
    if beat:
        lines.append("  beat     on: the leader fires cron schedules")
    if allowed:
        lines.append(f"  imports  registered tasks, and functions under {', '.join(allowed)}")
    return "\n".join(lines)


def _wait_for_database(app: Chancy, patience: float) -> None:
    """Start beside a Postgres restart as a running worker rides one out: wait, logging."""
    def on_retry(exc: BaseException, delay: float) -> None:
        click.echo(f"chancy worker: database unreachable ({redact(str(exc), app.dsn)}); retrying in {delay:.1f}s",
                   err=True)

    try:
        wait_until_reachable(app.store.connect_sync, patience, on_retry)
    except KeyboardInterrupt:
        raise CliError("interrupted while waiting for the database", ExitCode.INTERRUPTED) from None


@contextlib.contextmanager
def _metrics_served(app: Chancy, port: int | None) -> Iterator["WorkerMetrics | None"]:
    """The worker's metrics on ``port`` (``--metrics-port``) while it runs, or nothing."""
    if port is None:
        yield None
        return
    try:
        from chancy.observability.prometheus import serving
    except ImportError:
        raise CliError('--metrics-port needs prometheus-client: pip install "chancy[metrics]"',
                       ExitCode.CONFIGURATION) from None
    with contextlib.ExitStack() as stack:
        try:
            metrics = stack.enter_context(serving(app, port))
        except OSError as exc:
            raise CliError(f"--metrics-port {port}: cannot listen there ({exc.strerror or exc}); "
                           "choose a free port", ExitCode.CONFIGURATION) from None
        yield metrics


async def _serve(app: Chancy, names: list[str], options: dict[str, Any],
                 metrics: "WorkerMetrics | None" = None) -> ExitCode:
    """Run the worker (``options``: :class:`Worker`'s keyword arguments) until it stops; the
    exit code: 130 if Ctrl-C (SIGINT) stopped it, as a shell reports an interrupted command,
    else 0 (SIGTERM: a service manager's stop)."""
    async with app:
        worker = Worker(app, queues=names, **options)
        if metrics is not None:
            metrics.worker_id = worker.worker_id
        await worker.start()
    code = ExitCode.INTERRUPTED if signal.SIGINT in worker.received_signals else ExitCode.OK
    if worker.stopped_hard:
        _exit_now(code)
    return code


def _exit_now(code: ExitCode) -> NoReturn:
    """End the process once a hard stop has written every outcome, without waiting for the
    threads of the jobs it abandoned: Python cannot kill a thread, and the interpreter's
    exit (and asyncio's) would wait for each to return."""
    stdio.restore_streams()
    click.echo("chancy worker: stopped hard (tasks blocked in a thread, if any, were abandoned)", err=True)
    logging.shutdown()
    os._exit(int(code))


@click.command()
@target_options
@click.option("-Q", "--queues", metavar="A,B",
              help="Queues to serve [default: every queue the app declares; without -A: default].")
@click.option("-c", "--concurrency", type=click.IntRange(min=1),
              help="Jobs at a time per queue [default: a native app's queue setting; a Celery app's "
                   "worker_concurrency, else the CPU count, as Celery].")
@click.option("-P", "--pool", type=click.Choice(POOLS),
              help="Executor: process, thread, asyncio, solo (or Celery's prefork/threads).")
@click.option("-l", "--loglevel", type=click.Choice(logs.LEVELS, case_sensitive=False), default="INFO",
              show_default=True, help="Log level.")
@click.option("--log-format", type=click.Choice(logs.FORMATS), default="text", show_default=True,
              help="text for people, json (one object per line) for log shippers.")
@click.option("-n", "--hostname", "name", metavar="NAME",
              help="Worker id, e.g. celery@%h (%h: host name, %n: its first label, %d: its domain); must be unique.")
@click.option("--max-tasks-per-child", type=click.IntRange(min=1), metavar="N",
              help="Replace a process-pool child after N jobs (bounds leaks).")
@click.option("--max-memory-per-child", type=click.IntRange(min=1), metavar="KIB",
              help="Replace a process-pool child after a job that leaves it above KIB resident memory.")
@click.option("--prefetch-multiplier", type=click.IntRange(min=1), default=DEFAULT_PREFETCH_MULTIPLIER,
              show_default=True, metavar="N",
              help="Claim up to N jobs per slot, so the next ones are at hand when one finishes (1: only "
                   "for free slots); unstarted ones go back, attempt refunded, when the worker stops.")
@click.option("--metrics-port", type=click.IntRange(min=1, max=65535), metavar="N",
              help="Serve this worker's metrics (runs, failures, durations, in flight; per queue and task) "
                   "for Prometheus on port N, all interfaces (docs/observability.md).")
@click.option("-B", "--beat", is_flag=True, help="Also fire periodic (cron) schedules; only the leader fires them.")
@click.option("--allow-import", "allow_import", multiple=True, metavar="PREFIX",
              help="Also run unregistered functions defined under this module prefix, by import path "
                   "(repeatable) [env CHANCY_ALLOWED_IMPORTS, comma-separated]. Without it, only registered tasks run.")
@click.option("--shutdown-timeout", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds running jobs get to finish on SIGTERM/Ctrl-C (a second one stops at once).")
@click.option("--startup-timeout", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="Seconds to wait at start for a database that is down or restarting (0: fail at once).")
@click.option("--heartbeat-interval", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
              help="Seconds between this worker's heartbeats.")
@click.option("--liveness-timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds after its last heartbeat that this worker counts as dead and its running jobs "
                   "are recovered elsewhere [default: 3 heartbeats]. Longer rides out longer network "
                   "outages; shorter recovers a lost host's jobs sooner (docs/guarantees.md).")
def worker(target: Target, queues: str | None, concurrency: int | None, pool: str | None, loglevel: str,
           log_format: str, name: str | None, max_tasks_per_child: int | None, max_memory_per_child: int | None,
           beat: bool, allow_import: tuple[str, ...], shutdown_timeout: float, startup_timeout: float,
           heartbeat_interval: float, liveness_timeout: float | None, metrics_port: int | None,
           prefetch_multiplier: int) -> None:
    """Run jobs from the queues until SIGTERM or Ctrl-C (drains; a second signal stops hard).
    Exits 0 after SIGTERM, 130 after Ctrl-C (SIGINT). A Celery app's tasks' print() output
    is logged as it happens (worker_redirect_stdouts, at worker_redirect_stdouts_level).

    \b
    chancy worker -A proj -Q default,emails -c 8 -P thread
    chancy worker -A proj.tasks:app -P process --max-tasks-per-child 100
    chancy worker -A proj --allow-import proj.jobs
    """
    if liveness_timeout is not None and liveness_timeout <= heartbeat_interval:
        raise click.BadParameter(f"{liveness_timeout:g}s must exceed --heartbeat-interval ({heartbeat_interval:g}s), "
                                 "or a live worker would be declared dead", param_hint="--liveness-timeout")
    logs.setup(loglevel, log_format)
    execution.allow_imports(allow_import)
    limits = ChildLimits(max_tasks_per_child, max_memory_per_child)
    app, names = _worker_app(target.app_object, split_queues(queues), concurrency, pool, limits)
    output = _output(target.app_object, loglevel, log_format)
    _wait_for_database(app, startup_timeout)
    target.require_schema()
    if beat:
        enable_beat(app)
    worker_id = expand_node_name(name, socket.gethostname()) if name else None
    if worker_id:
        _check_unique_id(target, worker_id)
    click.echo(_banner(app, names, worker_id, pool, beat, execution.allowed_imports()), err=True)
    try:
        with stdio.worker_output(output), _metrics_served(app, metrics_port) as metrics:
            code = asyncio.run(_serve(app, names, dict(
                worker_id=worker_id, shutdown_timeout=shutdown_timeout, startup_timeout=startup_timeout,
                heartbeat_interval=heartbeat_interval, liveness_timeout=liveness_timeout,
                prefetch_multiplier=prefetch_multiplier), metrics))
    except KeyboardInterrupt:  # a signal before the worker installed its handlers
        raise CliError("interrupted before the worker started", ExitCode.INTERRUPTED) from None
    click.echo("chancy worker: stopped cleanly" + (" (interrupted)" if code else ""), err=True)
    click.get_current_context().exit(int(code))
