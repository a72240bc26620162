"""A Celery result backend on Chancy's job rows: ``result_backend="chancy+postgresql://…"``
(registered through Celery's ``celery.result_backends`` entry point).

A task's state and result are written onto its own job row, so the same row answers a
stock Celery ``AsyncResult``, a Chancy ``Reference`` and ``chancy.compat`` alike, whichever
kind of worker ran it. Waiting uses the row's completion NOTIFY instead of polling.

State mapping (row → Celery): pending/scheduled → PENDING, running → STARTED, retrying →
RETRY, succeeded → SUCCESS, failed → FAILURE, cancelled/expired → REVOKED; a state a
Celery task set itself (``update_state``, RETRY, STARTED) is kept in
``meta["celery"]["state"]`` with its info in ``["info"]``. A row a Celery worker has
acknowledged stays running until this backend stores its outcome (see the transport);
while a stock Celery worker runs it without having stored a state, it reads PENDING, as
Celery's stores say unless ``task_track_started``. A task whose result is ignored reads
PENDING too (nothing stored), though its row is finished; so does a task that raised
``Ignore`` or ``Reject`` (Celery stores nothing for it; its row is finished once it ended
and its delivery was acknowledged), unless it stored a state of its own before.

Chords are counted natively (:mod:`chancy.store.pg.celery_chords`): the header part that
completes a chord sends its body, as Celery's Redis backend does, with no
``celery.chord_unlock`` task polling; ``GroupResult.save()``/``restore()`` keep the
group in a table of their own.

A dropped connection (a Postgres restart, a failover) does not turn a task's outcome
into an error: storing it and reading states are sent again, with a log line, for up to
30 s (:func:`~chancy.store.pg.celery_connection.run_reconnecting`); each store carries its own
id, so one that had committed before the connection dropped is not applied twice.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from typing import Any, Mapping

import psycopg

from celery import signals, states
from celery.backends.base import BaseBackend
from celery.canvas import maybe_signature
from celery.exceptions import ChordError, TimeoutError as CeleryTimeoutError
from celery.result import GroupResult, allow_join_result, result_from_tuple
from celery.utils.functional import _regen

from chancy import serialization
from chancy.store.pg.dsn import resolve_dsn
from chancy.errors import SerializationError
from chancy.compat import payload
from chancy.compat.protocol import InvalidMessage, job_id_for, parse_delivery_tag
from chancy.job import JobRecord, JobState
from chancy.migrations import Names
from chancy.store.pg.jobs import JobSQL, finished_ids
from chancy.store.pg.celery_canvas import CanvasSQL
from chancy.store.pg.celery_chords import UNINDEXED_POSITION, ChordSQL, PartReturn
from chancy.store.pg.celery_connection import (Listening, first_line, run_reconnecting,
                                               statement_and_listen_connections)
from chancy.store.pg.celery_results import ResultSQL
from chancy.store.pg.celery_transport import TransportSQL
from chancy.store.pg.statements import single, Statement, Steps

#: Celery states that finish the row, and the row state each becomes.
TERMINAL_STATES = {states.SUCCESS: "succeeded", states.FAILURE: "failed", states.REVOKED: "cancelled"}
ROW_TO_CELERY = {
    JobState.PENDING: states.PENDING, JobState.SCHEDULED: states.PENDING, JobState.RUNNING: states.STARTED,
    JobState.RETRYING: states.RETRY, JobState.SUCCEEDED: states.SUCCESS, JobState.FAILED: states.FAILURE,
    JobState.CANCELLED: states.REVOKED, JobState.EXPIRED: states.REVOKED,
}
#: How long the header part that completes a chord holds the claim to send its body
#: (at least; twice result_chord_join_timeout): a part run again after the claimer died
#: takes the body over once the claim has lapsed.
CHORD_CLAIM_SECONDS = 30.0
#: A waiter re-reads the row at least this often, in case a notification was missed.
WAIT_RECHECK_INTERVAL = 5.0
#: A waiter that cannot LISTEN (Postgres restarting) re-reads the row this often.
LISTEN_RETRY_PAUSE = 0.5

log = logging.getLogger("chancy.compat.backend")


def exception_info(exc: Any) -> dict[str, Any]:
    """Celery's JSON form of an exception (``exc_type``, ``exc_module``, ``exc_message``)."""
    if isinstance(exc, BaseException):
        cls = type(exc)
        return {"exc_type": cls.__qualname__, "exc_module": cls.__module__,
                "exc_message": [a if isinstance(a, (str, int, float, bool, type(None))) else repr(a) for a in exc.args]}
    return dict(exc) if isinstance(exc, Mapping) else {"exc_type": "Exception", "exc_message": [str(exc)]}


def _error_as_exception_info(error: Mapping[str, Any]) -> dict[str, Any]:
    if "celery" in error:
        return dict(error["celery"])
    module, _, name = str(error.get("type", "Exception")).rpartition(".")
    return {"exc_type": name, "exc_module": module or None, "exc_message": [error.get("message", "")]}


def _arguments_json(request: Any) -> tuple[str, str]:
    """The request's arguments for a row this backend creates (a task that came through
    another broker); arguments JSON cannot hold are left out, the outcome still counts."""
    try:
        return serialization.dumps_arguments(getattr(request, "task", None) or "celery.unknown",
                                             getattr(request, "args", None) or (),
                                             getattr(request, "kwargs", None) or {})
    except SerializationError:
        return "[]", "{}"


def _held_by_celery(record: JobRecord) -> bool:
    """Whether a stock Celery worker's consumer (the ``chancy`` transport) holds the row."""
    return (record.taken_by or "").startswith("celery:")


def _ended_after_unready_state(celery: Mapping[str, Any]) -> bool:
    """Whether a row finished with no result (its task raised ``Ignore``) after its task
    stored a state that is not final (STARTED, ``update_state``): Celery's stores keep
    showing that state, as they were never told more."""
    return bool(celery.get("result_ignored")) and celery.get("state") not in states.READY_STATES


def _in_turn(statements: list[Statement]) -> Steps:
    """Statements run one after another (in the caller's transaction)."""
    for statement in statements:
        yield statement


def _chord_error(message: str, cause: Any) -> ChordError:
    """A ``ChordError`` with the part's exception as its cause, as Celery raises it."""
    error = ChordError(message)
    if isinstance(cause, BaseException):
        error.__cause__ = cause
    return error


class ChancyBackend(BaseBackend):
    """Celery results stored on (and read from) Chancy job rows."""

    persistent = True
    supports_autoexpire = False
    #: GroupResult.get() reads its members together (get_many), as on Redis: one query
    #: per wake-up, not one wait per member, and no member's parents consulted.
    supports_native_join = True

    def __init__(self, app: Any, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.url = url or app.conf.result_backend
        options = app.conf.get("result_backend_transport_options") or {}
        self.dsn = resolve_dsn(self.url)
        self.prefix = options.get("prefix", "chancy_")
        names = Names(self.prefix)
        self.job_sql = JobSQL(names)
        self.transport_sql = TransportSQL(names)
        self.result_sql = ResultSQL(names)
        self.chord_sql = ChordSQL(names)
        self.canvas_sql = CanvasSQL(names)
        self.database, self._listen = statement_and_listen_connections(self.dsn, options.get("session_url"))

    # --- writing ----------------------------------------------------------------------
    def _store_result(self, task_id: Any, result: Any, state: str, traceback: str | None = None,
                      request: Any = None, **kwargs: Any) -> Any:
        row_state = TERMINAL_STATES.get(state)
        celery: dict[str, Any] = {"state": state}
        result_json = error = None
        if state == states.SUCCESS:
            try:
                result_json = serialization.dumps(result)
            except (TypeError, ValueError):  # e.g. a pickle app's set: kept in its serializer
                celery["result_payload"] = payload.encode(self.serializer, [self.serializer], [result], {})
        elif state in states.EXCEPTION_STATES:
            info = exception_info(result)
            celery["info"] = info
            if row_state is not None:
                error = self._row_error(info, traceback)
        else:
            celery["info"] = result
        children = self.current_task_children(request)
        if children:
            celery["children"] = children
        if str(job_id_for(task_id)) != str(task_id):
            celery["task_id"] = str(task_id)
        delivery_info = getattr(request, "delivery_info", None) or {}
        args_json, kwargs_json = _arguments_json(request)
        store = functools.partial(
            self.result_sql.store_state,
            job_id_for(task_id), state=row_state, celery=celery, result_json=result_json, error=error,
            func=getattr(request, "task", None) or "celery.unknown",
            queue=delivery_info.get("routing_key") or self.app.conf.task_default_queue,
            args_json=args_json, kwargs_json=kwargs_json, write=uuid.uuid4().hex,
        )
        # Alone first (one round trip); a row with canvas bookkeeping is stored again with
        # its canvas step, in one transaction. A state that finishes nothing has no step.
        alone = store(with_canvas=row_state is None)
        stored = run_reconnecting(self.database, lambda: single(alone), f"store {state} of task {task_id}")
        if stored.canvas_pending:
            with_canvas = store(with_canvas=True)
            run_reconnecting(self.database, lambda: self._store_steps(with_canvas, row_state, str(task_id), error),
                             f"store {state} of task {task_id}", transaction=True)
        return result

    def _row_error(self, info: Mapping[str, Any], traceback: str | None) -> dict[str, Any]:
        """A Celery exception's info as an entry of the row's ``errors``."""
        return {"type": ".".join(filter(None, (info.get("exc_module"), info["exc_type"]))),
                "message": ", ".join(map(str, info.get("exc_message") or [])),
                "traceback": traceback, "celery": dict(info), "at": self.app.now().isoformat()}

    # --- ignore_result: nothing stored, yet the row finished -----------------------------
    def mark_as_done(self, task_id: Any, result: Any, request: Any = None, store_result: bool = True,
                     state: str = states.SUCCESS) -> None:
        if (not store_result or getattr(request, "ignore_result", False)) and not getattr(request, "is_eager", False):
            self._finish_ignored(task_id, None)
        super().mark_as_done(task_id, result, request=request, store_result=store_result, state=state)

    def mark_as_failure(self, task_id: Any, exc: Any, traceback: str | None = None, request: Any = None,
                        store_result: bool = True, call_errbacks: bool = True, state: str = states.FAILURE) -> None:
        if not store_result and not getattr(request, "is_eager", False):  # ignored, errors too
            self._finish_ignored(task_id, self._row_error(exception_info(exc), traceback))
        super().mark_as_failure(task_id, exc, traceback=traceback, request=request, store_result=store_result,
                                call_errbacks=call_errbacks, state=state)

    def _finish_ignored(self, task_id: Any, error: dict[str, Any] | None) -> None:
        """Celery stores nothing for a task whose result it ignores; its row is finished
        all the same (so no restart runs it again) and read as PENDING (see ``_meta_of``)."""
        run_reconnecting(self.database, lambda: single(self.result_sql.finish_ignored(job_id_for(task_id), error)),
                         f"finish task {task_id} (result ignored)")

    # --- Ignore / Reject: the task ended, nothing stored --------------------------------
    def end_unrecorded(self, request: Any) -> None:
        """Note that the task of ``request`` ended storing no state (it raised ``Ignore``
        or ``Reject``): its row is finished once its delivery is acknowledged too, so no
        restart runs it again (see :meth:`TransportSQL.end_unrecorded`). A message of
        another broker has no row to finish."""
        tag = (getattr(request, "properties", None) or {}).get("delivery_tag")
        try:
            job_id, attempt = parse_delivery_tag(tag)
        except InvalidMessage:
            return
        run_reconnecting(self.database, lambda: single(self.transport_sql.end_unrecorded(job_id, attempt)),
                         f"end task {getattr(request, 'id', job_id)} (no state stored)")

    def _store_steps(self, statement: Statement, row_state: str | None, task_id: str,
                     error: dict[str, Any] | None) -> Steps:
        """Store the state; when that finishes a step of a ``chancy.compat`` canvas (a
        chain, chord or link applied through Chancy and run by a Celery worker), advance
        the canvas in the same transaction, as a Chancy worker would."""
        canvas = (yield statement).canvas
        if not canvas or row_state is None:
            return
        if row_state == "succeeded":
            yield from self.canvas_sql.on_success(canvas)
        else:
            yield from self.canvas_sql.on_failure(canvas, task_id, error)

    def _forget(self, task_id: Any) -> None:
        run_reconnecting(self.database, lambda: single(self.result_sql.forget(job_id_for(task_id))),
                         f"forget task {task_id}")

    # --- saved groups (GroupResult.save / restore / delete) -----------------------------
    def _encoded(self, value: Any) -> bytes:
        """``value`` in the result serializer, as bytes (text serializers give str)."""
        encoded = self.encode(value)
        return encoded.encode() if isinstance(encoded, str) else encoded

    def _save_group(self, group_id: str, result: GroupResult) -> GroupResult:
        data = self._encoded({"result": result.as_tuple()})
        statements = self.chord_sql.save_group(group_id, data, float(self.expires) if self.expires else None)
        run_reconnecting(self.database, lambda: _in_turn(statements), f"save group {group_id}", transaction=True)
        return result

    def _restore_group(self, group_id: str) -> dict[str, Any] | None:
        data = run_reconnecting(self.database, lambda: single(self.chord_sql.restore_group(group_id)),
                                f"restore group {group_id}")
        if data is None:
            return None
        meta = self.decode(data)
        meta["result"] = result_from_tuple(meta["result"], self.app)
        return meta

    def _delete_group(self, group_id: str) -> None:
        run_reconnecting(self.database, lambda: single(self.chord_sql.delete_group(group_id)),
                         f"delete group {group_id}")

    # --- chords: a counter per chord, the body sent by the part that completes it -------
    def apply_chord(self, header_result_args: Any, body: Any, **kwargs: Any) -> None:
        """Before any header part is sent: (re)start the chord's counter; a header holding
        groups is saved, so its body gets the results in their nested shape."""
        self.ensure_chords_allowed()
        group_id, results = header_result_args[0], header_result_args[1]
        statements = [self.chord_sql.start_chord(group_id)]
        if not isinstance(results, _regen):
            header = self.app.GroupResult(*header_result_args)
            if any(isinstance(part, GroupResult) for part in header.results):
                data = self._encoded({"result": header.as_tuple()})
                statements += self.chord_sql.save_group(group_id, data, self._chord_keep_seconds())
        run_reconnecting(self.database, lambda: _in_turn(statements), f"start chord {group_id}",
                         transaction=True)

    def set_chord_size(self, group_id: str, chord_size: int) -> None:
        run_reconnecting(self.database, lambda: single(self.chord_sql.set_size(group_id, chord_size)),
                         f"set the size of chord {group_id}")

    def add_to_chord(self, group_id: str, result: Any) -> None:
        run_reconnecting(self.database, lambda: single(self.chord_sql.add_to_chord(group_id)),
                         f"add a task to chord {group_id}")

    def on_chord_part_return(self, request: Any, state: str, result: Any, propagate: Any = None,
                             **kwargs: Any) -> None:
        """Count this header part once; the part that completes the chord joins the
        header's results and sends the body (or fails it with a ``ChordError``)."""
        group_id, task_id = request.group, request.id
        if not group_id or not task_id or not request.chord:
            return
        position = UNINDEXED_POSITION if request.group_index is None else int(request.group_index)
        data = self._encoded([1, task_id, state, self.encode_result(result, state)])
        statement = self.chord_sql.part_return(
            group_id, task_id, position, data, fallback_size=request.chord.get("chord_size"),
            token=uuid.uuid4().hex, lease=max(CHORD_CLAIM_SECONDS, 2 * (self.app.conf.result_chord_join_timeout or 0)),
        )
        part = run_reconnecting(self.database, lambda: self._part_steps(group_id, statement),
                                f"count part {task_id} of chord {group_id}", transaction=True)
        if part.total is not None and part.done > part.total:
            log.warning("chord %s: %s parts returned for a size of %s", group_id, part.done, part.total)
        if part.claimed:
            self._complete_chord(group_id, maybe_signature(request.chord, app=self.app), statement.params["token"])

    def _part_steps(self, group_id: str, statement: Statement) -> Steps:
        yield self.chord_sql.ensure_chord(group_id)  # a chord started by another backend version
        part: PartReturn = yield statement
        return part

    def _complete_chord(self, group_id: str, callback: Any, token: str) -> None:
        """Send the body with the header's results in order, or fail it as Celery does
        (``Dependency <id> raised …`` when a part failed); either way the chord is done."""
        try:
            try:
                results = self._chord_results(group_id)
            except ChordError as exc:
                log.error("chord %s: %s", group_id, exc)
                self.chord_error_from_stack(callback, exc)
                return
            except Exception as exc:  # noqa: BLE001 - reported to the body, as Celery does
                log.exception("chord %s: joining its header failed", group_id)
                self.chord_error_from_stack(callback, _chord_error(f"Join error: {exc!r}", exc))
                return
            try:
                self.app.amqp._retry_publish(callback.delay, results)
            except Exception as exc:  # noqa: BLE001
                log.exception("chord %s: sending its body failed", group_id)
                self.chord_error_from_stack(callback, _chord_error(f"Callback error: {exc!r}", exc))
        finally:
            run_reconnecting(self.database,
                             lambda: single(self.chord_sql.fired(group_id, token, self._chord_keep_seconds())),
                             f"mark chord {group_id} done")

    def _chord_results(self, group_id: str) -> list[Any]:
        """The header's results: joined through the saved header when it holds groups,
        else decoded from the parts in header order."""
        saved = self._restore_group(group_id)
        if saved is not None:
            with allow_join_result():
                return saved["result"].join_native(timeout=self.app.conf.result_chord_join_timeout, propagate=True)
        stored = run_reconnecting(self.database, lambda: single(self.chord_sql.parts(group_id)),
                                  f"read the parts of chord {group_id}")
        return [self._part_result(data) for data in stored]

    def _part_result(self, data: bytes) -> Any:
        _, task_id, state, value = self.decode(data)
        if state in states.EXCEPTION_STATES:
            value = self.exception_to_python(value)
        if state in states.PROPAGATE_STATES:
            raise _chord_error(f"Dependency {task_id} raised {value!r}", value)
        return value

    def _chord_keep_seconds(self) -> float:
        """How long a finished chord's row (and a chord's saved header) is kept: Celery's
        result_chord_expires, else result_expires, else a day."""
        expires = self.prepare_expires(self.app.conf.get("result_chord_expires"), type=float)
        return expires or 86400.0

    # --- reading ------------------------------------------------------------------------
    def _get_task_meta_for(self, task_id: Any) -> dict[str, Any]:
        record = run_reconnecting(self.database, lambda: single(self.job_sql.get(job_id_for(task_id))),
                                  f"read task {task_id}")
        return self.meta_from_decoded(self._meta_of(record, task_id))

    def _meta_of(self, record: JobRecord | None, task_id: Any) -> dict[str, Any]:
        if record is None:
            return {"status": states.PENDING, "result": None, "task_id": str(task_id)}
        celery = record.meta.get("celery") or {}
        status = ROW_TO_CELERY[record.state]
        result: Any = None
        traceback = None
        if (celery.get("ignore_result") or celery.get("result_ignored")) and not celery.get("write"):
            # Nothing was stored for it, as in Celery's stores: PENDING, no result.
            return {"status": states.PENDING, "result": None, "task_id": str(task_id)}
        if record.state is JobState.RUNNING and not celery.get("state") and _held_by_celery(record):
            # A stock Celery worker stores STARTED itself when task_track_started asks for
            # it; until then Celery's stores say PENDING, and so does this one.
            status = states.PENDING
        elif celery.get("state") and (not record.is_finished or _ended_after_unready_state(celery)):
            status, result = celery["state"], celery.get("info")
        elif record.state is JobState.SUCCEEDED:
            result = record.result
            if celery.get("result_payload"):
                result = payload.decode(celery["result_payload"], sorted(self.accept))[0][0]
        elif record.state is JobState.FAILED and record.errors:
            result = _error_as_exception_info(record.errors[-1])
            traceback = record.errors[-1].get("traceback")
        elif status == states.REVOKED:
            result = {"exc_type": "TaskRevokedError", "exc_module": "celery.exceptions",
                      "exc_message": [f"job {record.state.value}"]}
        meta = {
            "status": status, "result": result, "traceback": traceback,
            "children": celery.get("children") or [], "task_id": str(task_id),
            "date_done": (record.completed_at.isoformat()
                          if record.completed_at and status in states.READY_STATES else None),
        }
        # As Celery's stores keep them: the group (a chord's header) and parent it ran in.
        meta.update({key: celery[field] for key, field in (("group_id", "group"), ("parent_id", "parent_id"))
                     if celery.get(field)})
        return meta

    def wait_for(self, task_id: Any, timeout: float | None = None, interval: float = 0.5,
                 no_ack: bool = True, on_interval: Any = None) -> dict[str, Any]:
        """Block until the task is ready, woken by the row's completion NOTIFY.
        ``on_interval`` (``get()`` checking the parents for an error) runs as Celery's
        Redis backend runs it: after each wait (at most ``interval``) and once the task
        is ready, not before the first wait. So a chord body whose header failed raises
        the part's own error before the body's ChordError, and by then the failure has
        reached the rest of its chain, as on Redis."""
        self._ensure_not_eager()
        deadline = None if timeout is None else time.monotonic() + timeout
        wanted = str(job_id_for(task_id))
        pause = min(interval or WAIT_RECHECK_INTERVAL, WAIT_RECHECK_INTERVAL) if on_interval else WAIT_RECHECK_INTERVAL
        waited = False
        with self._listen.lock:
            while True:
                listener = self._done_listener()  # before the read: no completion falls between
                meta = self.get_task_meta(task_id, cache=False)
                ready = meta["status"] in states.READY_STATES
                if on_interval and (ready or waited):
                    on_interval()
                if ready:
                    return meta
                wait = pause if deadline is None else deadline - time.monotonic()
                if wait <= 0:
                    raise CeleryTimeoutError("The operation timed out.")
                self._wait_for_done(listener, {wanted}, min(wait, pause))
                waited = True

    def get_many(self, task_ids: Any, timeout: float | None = None, interval: float = 0.5, no_ack: bool = True,
                 on_message: Any = None, on_interval: Any = None, max_iterations: int | None = None,
                 READY_STATES: frozenset[str] = states.READY_STATES) -> Any:  # noqa: N803 - Celery's name
        """Yield ``(task_id, meta)`` for each task as it becomes ready (the order they
        finish in): every row still waited for is read in one query, then the waiter
        sleeps until one of them announces its completion."""
        self._ensure_not_eager()
        deadline = None if timeout is None else time.monotonic() + timeout
        pending = {str(task_id) for task_id in task_ids}
        for task_id in list(pending):
            cached = self._cache.get(task_id)
            if cached and cached["status"] in READY_STATES:
                pending.discard(task_id)
                yield task_id, cached
        iterations = 0
        while pending:
            with self._listen.lock:
                listener = self._done_listener()  # before the read: no completion falls between
                ready = [(task_id, meta) for task_id, meta in self._read_many(pending)
                         if meta["status"] in READY_STATES]
                if not ready:
                    if on_interval:
                        on_interval()
                    wait = WAIT_RECHECK_INTERVAL if deadline is None else deadline - time.monotonic()
                    if wait <= 0:
                        raise CeleryTimeoutError(f"Operation timed out ({timeout})")
                    self._wait_for_done(listener, {str(job_id_for(t)) for t in pending},
                                        min(wait, WAIT_RECHECK_INTERVAL))
                    iterations += 1
                    if max_iterations and iterations >= max_iterations:
                        return
                    continue
            for task_id, meta in ready:  # yielded outside the lock: the caller may wait on others
                pending.discard(task_id)
                if meta["status"] == states.SUCCESS:
                    self._cache[task_id] = meta
                if on_message is not None:
                    on_message(meta)
                yield task_id, meta

    def _read_many(self, task_ids: set[str]) -> list[tuple[str, dict[str, Any]]]:
        by_job = {job_id_for(task_id): task_id for task_id in task_ids}
        records = run_reconnecting(self.database, lambda: single(self.job_sql.get_many(list(by_job))),
                                   f"read {len(by_job)} tasks")
        found = {record.id: record for record in records}
        return [(task_id, self.meta_from_decoded(self._meta_of(found.get(job_id), task_id)))
                for job_id, task_id in by_job.items()]

    def _done_listener(self) -> Listening | None:
        """The connection LISTENing for completions; ``None`` while it cannot be opened (a
        Postgres restart): the waiter then re-reads the row every so often instead."""
        try:
            return self._listen.listen(self.job_sql.done_channel)
        except psycopg.OperationalError as exc:
            log.warning("waiting for results: cannot LISTEN (%s)", first_line(exc))
            self._listen.close()
            return None

    def _wait_for_done(self, listener: Listening | None, job_ids: set[str], seconds: float) -> None:
        """Until a completion NOTIFY of one of the rows, or ``seconds``; a dropped LISTEN
        connection only shortens the wait (the next one listens on a new connection)."""
        if listener is None:
            time.sleep(min(seconds, LISTEN_RETRY_PAUSE))
            return
        try:
            for notify in listener.notifications(timeout=seconds):
                if not job_ids.isdisjoint(finished_ids(notify.payload)):
                    return
        except psycopg.OperationalError as exc:
            log.warning("waiting for %d task(s): the LISTEN connection failed (%s)", len(job_ids), first_line(exc))
            self._listen.close()

    def as_uri(self, include_password: bool = False) -> str:
        if include_password or "@" not in self.url:
            return self.url
        scheme, _, rest = self.url.partition("://")
        credentials, _, host = rest.rpartition("@")
        return f"{scheme}://{credentials.split(':', 1)[0]}:**@{host}"


@signals.task_postrun.connect(weak=False, dispatch_uid="chancy.compat.backend.task_ended_unrecorded")
def _task_ended_unrecorded(task: Any = None, state: str | None = None, **kwargs: Any) -> None:
    """Celery's trace stores nothing for a task that raised ``Ignore`` (also how
    ``Task.replace()`` ends) or ``Reject``; it only says so through ``task_postrun``, in
    the process that ran the task, which is where its row is finished from."""
    if state not in (states.IGNORED, states.REJECTED) or not isinstance(getattr(task, "backend", None), ChancyBackend):
        return
    request = task.request
    if not getattr(request, "is_eager", False):
        task.backend.end_unrecorded(request)
