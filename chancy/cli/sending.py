"""``chancy push`` and its Celery spelling ``chancy call``: one job from the command line.

Both are the same command (one set of options, one callback), so that a Celery user's
``celery call proj.add -a '[2, 2]' --countdown 10`` works unchanged and a Chancy user's
``push --wait`` too. With ``-A``, a task name the app does not know is refused with the
closest names it does know; ``--force`` sends it anyway, for a task that only the workers'
code defines (Celery's ``send_task`` case). Without ``-A`` there is nothing to check
against, so any name is sent."""

from __future__ import annotations

import difflib
import importlib
import json
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

import click

from chancy.app import Chancy
from chancy.cli.common import CliError, ExitCode, Target, json_option, target_options
from chancy.cli.loading import task_names
from chancy.cli.output import emit_json
from chancy.errors import SerializationError, UnknownTaskError
from chancy.execution import resolve
from chancy.job import Job, JobState, Reference
from chancy.task import Task


def _json_arg(kind: type, example: str) -> Any:
    def convert(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        if value is None:
            return kind()
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not valid JSON ({exc})") from None
        if not isinstance(parsed, kind):
            raise click.BadParameter(f"must be a JSON {kind.__name__}, e.g. {example}")
        return parsed

    return convert


def _moment(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | float | None:
    """An ISO 8601 time (naive means UTC, as in Celery) or, for --expires, seconds."""
    if value is None:
        return None
    if param.name == "expires":
        try:
            return float(value)
        except ValueError:
            pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        seconds = " or seconds from now" if param.name == "expires" else ""
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 time{seconds}, e.g. 2026-11-22T18:00:00+01:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _at(moment: datetime | float | None) -> datetime | None:
    """An absolute UTC time from a time or a number of seconds from now."""
    if moment is None or isinstance(moment, datetime):
        return moment
    return datetime.now(timezone.utc) + timedelta(seconds=moment)


def check_task(target: Target, task: str) -> None:
    """Refuse a task name that the ``-A`` app neither registers nor can import, naming
    the registered names it most resembles."""
    if target.app_spec is None:
        return
    known = task_names(target.app_object)
    if task in known:
        return
    try:
        resolve(task)
        return
    except UnknownTaskError:
        pass
    close = _closest(task, known)
    hint = f"; did you mean {' or '.join(close)}?" if close else f" (it registers {len(known)} task(s))"
    raise CliError(f"-A {target.app_spec} has no task {task!r}{hint} Pass --force to send it anyway "
                   "(a worker whose code defines it will run it).", ExitCode.NOT_FOUND)


def _closest(name: str, known: list[str]) -> list[str]:
    """The known names most like ``name``: the best and any nearly as good (names of one
    module share a long prefix, so a plain cutoff would offer them all)."""
    ratios = {other: difflib.SequenceMatcher(None, name, other).ratio() for other in known}
    ranked = sorted((other for other, ratio in ratios.items() if ratio >= 0.6), key=ratios.__getitem__, reverse=True)
    return [other for other in ranked if ratios[other] >= ratios[ranked[0]] - 0.05][:3]


def _template(name: str) -> Job:
    """What a job of task ``name`` looks like by default: its ``@chancy.task`` options
    (queue, priority, attempts, limits…) when this process can import it by that name."""
    module_name, _, attr = name.rpartition(".")
    try:
        candidate = getattr(importlib.import_module(module_name), attr, None) if module_name else None
    except ImportError:
        candidate = None
    return candidate.defaults if isinstance(candidate, Task) else Job(name)


def _push_native(app: Chancy, task: str, args: list, kwargs: dict, options: dict[str, Any]) -> Reference:
    registered = app.tasks.get(task)
    try:
        template = registered.defaults if registered is not None else _template(task)
        job = template.with_options(args=args, kwargs=kwargs, **options)
    except (ValueError, TypeError) as exc:
        raise CliError(str(exc), ExitCode.USAGE) from None
    return app.push_sync(job)


def _push_celery(celery_app: Any, task: str, args: list, kwargs: dict, options: dict[str, Any]) -> Reference:
    """``send_task``, so that the app's routing and task options apply as in Celery."""
    unsupported = sorted(set(options) & {"max_attempts", "unique_key"})
    if unsupported:
        raise CliError(f"--{unsupported[0].replace('_', '-')} is not a Celery option: the task's own "
                       "max_retries applies to a Celery-style app", ExitCode.USAGE)
    renamed = {"scheduled_at": "eta", "expires_at": "expires"}
    result = celery_app.send_task(task, args, kwargs, **{renamed.get(k, k): v for k, v in options.items()})
    record = celery_app.chancy.get_job_sync(result.id)  # where the app's routing put it
    return Reference(celery_app.chancy, record.id, record.queue)


@click.command()
@click.argument("task")
@click.option("-a", "--args", callback=_json_arg(list, '[1, "a"]'), metavar="JSON",
              help='Positional arguments, e.g. \'[1, "a"]\'.')
@click.option("-k", "--kwargs", callback=_json_arg(dict, '{"x": 1}'), metavar="JSON",
              help='Keyword arguments, e.g. \'{"x": 1}\'.')
@click.option("-Q", "--queue", help="Queue to push to [default: the task's, else default; a Celery-style app "
              "routes as Celery does].")
@click.option("--priority", type=int, help="Higher runs first [default: the task's, else 0].")
@click.option("--countdown", type=click.FloatRange(min=0), help="Run no sooner than this many seconds from now.")
@click.option("--eta", callback=_moment, metavar="ISO-TIME", help="Run no sooner than this time (naive: UTC).")
@click.option("--expires", callback=_moment, metavar="ISO-TIME|SECONDS",
              help="Do not run it after this time (or this many seconds from now): it becomes expired.")
@click.option("--max-attempts", type=click.IntRange(min=1),
              help="Attempts before it fails for good [default: the task's, else 1].")
@click.option("--unique-key", help="At most one live job per key: a duplicate returns the live job's id.")
@click.option("--force", is_flag=True, help="Send a task name that the -A app does not know.")
@click.option("--wait", "wait_timeout", type=click.FloatRange(min=0), metavar="SECONDS",
              help="Wait this long for the job to finish; exit 0 only if it succeeded.")
@target_options
@json_option
def push(target: Target, task: str, args: list, kwargs: dict, queue: str | None, priority: int | None,
         countdown: float | None, eta: datetime | None, expires: datetime | float | None,
         max_attempts: int | None, unique_key: str | None, force: bool, wait_timeout: float | None,
         as_json: bool) -> None:
    """Push one job running TASK (a registered name or an importable module.function).

    Prints the job id (or, with --wait, the finished job). With -A, an unknown TASK is
    refused (exit 6) with the closest registered names, unless --force; without -A any
    name is sent. `chancy call` is this command under Celery's name."""
    if countdown is not None and eta is not None:
        raise click.UsageError("give --countdown or --eta, not both")
    given = {"queue": queue, "priority": priority, "max_attempts": max_attempts, "unique_key": unique_key,
             "scheduled_at": _at(countdown) or eta, "expires_at": _at(expires)}
    options = {key: value for key, value in given.items() if value is not None}
    if not force:
        check_task(target, task)
    obj = target.app_object
    with target.app as app:
        try:
            if obj is app:
                ref = _push_native(app, task, args, kwargs, options)
            else:
                ref = _push_celery(obj, task, args, kwargs, options)
        except SerializationError as exc:
            raise CliError(str(exc), ExitCode.USAGE) from None
        if wait_timeout is None:
            if as_json:
                emit_json({"id": str(ref.id), "queue": ref.queue})
            else:
                click.echo(str(ref.id))
            return
        try:
            record = ref.wait_sync(timeout=wait_timeout)
        except TimeoutError:
            raise CliError(f"job {ref.id} did not finish within {wait_timeout:g}s (it is still waiting or running)",
                           ExitCode.FAILED) from None
    from chancy.cli.jobs import print_job

    print_job(record, as_json)
    if record.state is not JobState.SUCCEEDED:
        sys.exit(ExitCode.FAILED)


#: ``celery call``: the same options and behaviour as ``push``, under Celery's name.
call = click.Command(
    "call", callback=push.callback, params=push.params, epilog=push.epilog,
    help="Push TASK and print its id, as `celery call` does: the same command as `chancy push`, "
         "with the same options (-a/--args, -k/--kwargs, --countdown, --eta, --expires, -Q/--queue, …).",
    short_help="Push a task by name and print its id (Celery's `celery call`).",
)
