"""Celery's task message protocol (v2, and v1 from old producers) ⇄ Chancy job rows.

This is the one module that knows the wire format. A message a Celery producer
publishes becomes a first-class :class:`~chancy.job.Job` (:func:`job_from_message`); a
stored row becomes the protocol-v2 message a stock Celery worker expects
(:func:`message_from_record`). Celery data without a column lives in
``meta["celery"]`` (see ARCHITECTURE.md).

Priority mapping: Celery priorities on the wire are 0–9, clamped like kombu's virtual
transports (Redis) clamp them. By default a Celery priority ``p`` is the Chancy priority
``p`` (higher runs first, as on RabbitMQ). Apps coming from Redis, where lower numbers
run first, pass ``lower_priority_first=True``: ``p`` becomes ``9 - p``. Either way the
mapping round-trips. ``chancy.compat``'s own ``apply_async`` keeps RabbitMQ's wider range,
0–255 (:func:`compat_priority`).

Trust: a row is data anyone with write access to the table can forge, so arguments kept
in a serializer other than JSON are decoded only for a consumer that accepts that
content type (:func:`message_from_record`), and a message's id takes over an existing
row only under the rules of :mod:`chancy.store.pg.celery_transport`.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Collection, Mapping

from kombu import compression, serialization as kombu_serialization
from kombu.exceptions import ContentDisallowed, DecodeError

from chancy import serialization
import chancy.compat.payload as payload
from chancy.errors import ConfigurationError
from chancy.job import Job, JobRecord, Limit, new_job_id

MAX_CELERY_PRIORITY = 9
#: The top of ``chancy.compat``'s priority range: AMQP's, as RabbitMQ (higher runs first).
MAX_COMPAT_PRIORITY = 255
#: Attempts a Celery-born row gets beyond its own run: the wire does not carry a task's
#: retry budget (a Celery worker enforces ``max_retries`` itself, a Chancy worker through
#: the compat layer), so these only cover a worker or consumer dying mid-task; the row
#: is then recovered and run again, at most this many times.
LOST_DELIVERY_BUDGET = 3

#: Header fields kept verbatim in ``meta["celery"]``; everything else in the headers
#: that Celery does not define is a user header (``meta["celery"]["headers"]``).
KEPT_HEADERS = (
    "root_id", "parent_id", "group", "group_index", "shadow", "argsrepr", "kwargsrepr",
    "origin", "ignore_result", "replaced_task_nesting", "stamped_headers", "stamps",
)
PROTOCOL_HEADERS = frozenset(
    KEPT_HEADERS + ("lang", "task", "id", "retries", "eta", "expires", "timelimit", "compression")
)
EMBED_KEYS = ("callbacks", "errbacks", "chain", "chord")
#: Message properties the transport sets itself on delivery; any other property a
#: producer gave (``apply_async(app_id=...)``) is kept and delivered as it came.
DELIVERY_PROPERTIES = frozenset({
    "correlation_id", "reply_to", "delivery_mode", "delivery_info", "priority", "body_encoding", "delivery_tag",
})


class InvalidMessage(ValueError):
    """A message that cannot become a runnable job; the text says what to fix."""


@dataclasses.dataclass(frozen=True)
class Translation:
    """What :func:`job_from_message` made of a message. With ``error`` set, the job
    must be stored as failed (it keeps the raw message in ``meta``) instead of run."""

    job: Job
    attempts: int
    error: str | None = None


def to_chancy_priority(celery_priority: Any, lower_priority_first: bool = False) -> int:
    if celery_priority is None:
        return 0
    priority = max(0, min(MAX_CELERY_PRIORITY, int(celery_priority)))
    return MAX_CELERY_PRIORITY - priority if lower_priority_first else priority


def compat_priority(priority: Any) -> int:
    """A ``chancy.compat`` ``apply_async`` priority, clamped to 0–255 as on RabbitMQ, so a
    value beyond the column's range is the most urgent one instead of a database error."""
    return max(0, min(MAX_COMPAT_PRIORITY, int(priority or 0)))


def to_celery_priority(chancy_priority: int, lower_priority_first: bool = False) -> int:
    priority = max(0, min(MAX_CELERY_PRIORITY, chancy_priority))
    return MAX_CELERY_PRIORITY - priority if lower_priority_first else priority


def job_id_for(task_id: Any) -> uuid.UUID:
    """The row id of a Celery task id. Celery ids are UUIDs; any other string (a custom
    ``task_id=``) maps to a stable UUIDv5 and is kept in ``meta["celery"]["task_id"]``."""
    try:
        return uuid.UUID(str(task_id))
    except ValueError:
        return uuid.uuid5(uuid.NAMESPACE_URL, f"celery-task:{task_id}")


def celery_task_id(record: JobRecord) -> str:
    return (record.meta.get("celery") or {}).get("task_id") or str(record.id)


# --- inbound: a published message becomes a job -------------------------------------------
def decode_body(message: Mapping[str, Any], accept: Collection[str]) -> Any:
    """The body as Python data: base64, then kombu decompression, then the serializer,
    refusing content types not in ``accept``."""
    body = message.get("body")
    properties = message.get("properties") or {}
    headers = message.get("headers") or {}
    content_type = message.get("content-type")
    if body is None or not content_type:
        raise InvalidMessage("the message has no body or no content-type")
    if properties.get("body_encoding") == "base64":
        try:
            body = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError, TypeError) as exc:
            raise InvalidMessage(f"the body is not valid base64 ({exc})") from None
    if headers.get("compression"):
        try:
            body = compression.decompress(body, headers["compression"])
        except Exception as exc:  # noqa: BLE001 - any codec failure means a corrupt body
            raise InvalidMessage(
                f"the body cannot be decompressed with {headers['compression']!r} ({exc})"
            ) from None
    try:
        return kombu_serialization.loads(
            body, content_type, message.get("content-encoding") or "utf-8",
            accept=accepted_content_types(accept),
        )
    except ContentDisallowed:
        raise InvalidMessage(
            f"content type {content_type!r} is not accepted (accepted: {sorted(accept)}); add "
            "its serializer to broker_transport_options['accept_content'] if you trust the producers"
        ) from None
    except (DecodeError, Exception) as exc:  # noqa: BLE001 - decoding untrusted input
        raise InvalidMessage(f"the {content_type} body cannot be decoded ({type(exc).__name__}: {exc})") from None


def accepted_content_types(accept: Collection[str]) -> set[str]:
    """Serializer names (``"json"``, ``"pickle"``…) or MIME types as MIME types; a name
    whose serializer is not installed is a configuration error, named as such."""
    installed = kombu_serialization.registry.name_to_type
    unknown = [name for name in accept if "/" not in name and name not in installed]
    if unknown:
        raise ConfigurationError(
            f"accept_content lists {unknown}, but no serializer of that name is installed "
            f"(e.g. pip install pyyaml / msgpack); installed: {sorted(installed)}"
        )
    return kombu_serialization.prepare_accept_content(accept)


def _v1_as_v2(body: Mapping[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """Headers and ``[args, kwargs, embed]`` of a protocol-v1 body (everything in the body)."""
    if not isinstance(body, Mapping) or "task" not in body or "id" not in body:
        raise InvalidMessage(
            "the message has no 'task' header and its body is not a protocol-v1 task dict; "
            "it is not a Celery task message"
        )
    timelimit = body.get("timelimit") or (None, None)
    headers = {
        "task": body["task"], "id": body["id"], "retries": body.get("retries", 0),
        "eta": body.get("eta"), "expires": body.get("expires"), "group": body.get("taskset"),
        "timelimit": [timelimit[1], timelimit[0]] if len(timelimit) == 2 else [None, None],
    }
    embed = {"callbacks": body.get("callbacks"), "errbacks": body.get("errbacks"),
             "chord": body.get("chord"), "chain": None}
    return headers, [body.get("args") or [], body.get("kwargs") or {}, embed]


def _parse_time(value: Any, label: str) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        when = value
    else:
        try:
            when = datetime.fromisoformat(str(value))
        except ValueError:
            raise InvalidMessage(f"header {label!r} is not an ISO 8601 time: {value!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def message_digest(message: Mapping[str, Any]) -> str | None:
    """A fingerprint of what a producer published (body, content type and headers, not
    the per-publish delivery tag): a publish repeated after a dropped connection is
    recognised as the message already stored. ``None`` for a message too deep to print."""
    try:
        published = repr(tuple(message.get(key) for key in ("content-type", "content-encoding", "body", "headers")))
    except RecursionError:
        return None
    return hashlib.sha256(published.encode("utf-8", "surrogatepass")).hexdigest()


def _celery_meta(headers: Mapping[str, Any], properties: Mapping[str, Any], embed: Mapping[str, Any],
                 task_id: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {key: headers.get(key) for key in KEPT_HEADERS if key in headers}
    meta["timelimit"] = list(headers.get("timelimit") or (None, None))
    meta["reply_to"] = properties.get("reply_to")
    meta["correlation_id"] = properties.get("correlation_id")
    meta["properties"] = _storable({k: v for k, v in properties.items() if k not in DELIVERY_PROPERTIES})
    if headers.get("eta") not in (None, ""):
        meta["eta"] = str(headers["eta"])
    meta["headers"] = {k: v for k, v in headers.items() if k not in PROTOCOL_HEADERS}
    for key in EMBED_KEYS:
        meta[key] = (embed or {}).get(key)
    if str(job_id_for(task_id)) != str(task_id):
        meta["task_id"] = str(task_id)
    return meta


def _storable(values: Mapping[str, Any]) -> dict[str, Any]:
    """The entries a row's JSON can hold (a property of another kind is left out)."""
    kept = {}
    for key, value in values.items():
        try:
            serialization.dumps(value)
        except (TypeError, ValueError, RecursionError):
            continue
        kept[key] = value
    return kept


def job_from_message(
    message: Mapping[str, Any], queue: str, *, accept: Collection[str] = ("json",),
    lower_priority_first: bool = False,
) -> Translation:
    """Translate one published message (as a kombu virtual channel's ``_put`` receives
    it). Never raises for bad input: a message that cannot run comes back with ``error``
    set and the raw message in ``meta["celery"]["raw"]``, so nothing is ever dropped."""
    headers = dict(message.get("headers") or {})
    properties = message.get("properties") or {}
    digest = message_digest(message)
    try:
        body = decode_body(message, accept)
        if "task" not in headers:
            headers, body = _v1_as_v2(body)
        if not isinstance(body, (list, tuple)) or len(body) != 3:
            raise InvalidMessage("a protocol-v2 body must be [args, kwargs, embed]")
        args, kwargs, embed = body
        if not isinstance(args, (list, tuple)) or not isinstance(kwargs, Mapping):
            raise InvalidMessage("a protocol-v2 body must hold a list of args and a dict of kwargs")
        if not isinstance(headers.get("task"), str) or not headers["task"] or headers.get("id") in (None, ""):
            raise InvalidMessage("the message names no task or has no id")
        retries = int(headers.get("retries") or 0)
        hard_limit = (headers.get("timelimit") or (None, None))[0]
        celery_meta = _celery_meta(headers, properties, embed, headers["id"])
        celery_meta["digest"] = digest
        content_type = message.get("content-type")
        if content_type != "application/json":
            # Kept in its own serializer (as chancy.compat stores such arguments), so a
            # Celery worker gets it back as sent and objects JSON cannot hold survive.
            name = kombu_serialization.registry.type_to_name[content_type]
            celery_meta["payload"] = payload.encode(name, sorted(accepted_content_types(accept)), args, kwargs)
            args, kwargs = (), {}
        job = Job(
            headers["task"], args=args, kwargs=kwargs, queue=queue,
            priority=to_chancy_priority(properties.get("priority"), lower_priority_first),
            max_attempts=retries + 1 + LOST_DELIVERY_BUDGET,
            scheduled_at=_parse_time(headers.get("eta"), "eta"),
            expires_at=_parse_time(headers.get("expires"), "expires"),
            limits=[Limit(Limit.Type.TIME, hard_limit)] if hard_limit else [],
            meta={"celery": celery_meta},
            id=job_id_for(headers["id"]),
        )
        serialization.dumps_arguments(job.func, job.args, job.kwargs)
        serialization.dumps(dict(job.meta))
        return Translation(job, attempts=retries)
    except Exception as exc:  # noqa: BLE001 - bad input becomes a failed row, never a crash
        return _unrunnable(message, headers, queue, digest, f"Unrunnable Celery message: {exc}")


def _unrunnable(message: Mapping[str, Any], headers: Mapping[str, Any], queue: str, digest: str | None,
                error: str) -> Translation:
    task = headers.get("task")
    task_id = headers.get("id")
    celery_meta: dict[str, Any] = {"raw": _raw_copy(message, headers), "digest": digest}
    if task_id not in (None, "") and str(job_id_for(task_id)) != str(task_id):
        celery_meta["task_id"] = str(task_id)
    job = Job(
        task if isinstance(task, str) and task else "celery.unknown", queue=queue,
        meta={"celery": celery_meta},
        id=job_id_for(task_id) if task_id not in (None, "") else new_job_id(),
    )
    return Translation(job, attempts=0, error=error)


def _raw_copy(message: Mapping[str, Any], headers: Mapping[str, Any]) -> dict[str, Any]:
    """The message as published, to re-publish once fixed: as is when JSON holds it, else
    its repr, else (nested past the recursion limit) its plain text fields only."""
    raw = {key: message.get(key) for key in ("body", "content-type", "content-encoding", "properties")}
    raw["headers"] = dict(headers)
    try:
        serialization.dumps(raw)
        return raw
    except (TypeError, ValueError):
        pass
    try:
        return {"repr": repr(message)[:100_000]}
    except RecursionError:
        return {key: value for key, value in raw.items() if isinstance(value, str)}


# --- a signature from a message's embed becomes the next job ---------------------------------
def job_from_signature(
    signature: Mapping[str, Any], parent: JobRecord, args_before: tuple = (), chain: list[Any] | None = None,
) -> Job:
    """The job a Celery worker would send for a ``link``/``link_error`` signature or the
    next step of a chain, when ``parent`` finished: ``args_before`` (the parent's result,
    or its task id for an errback) go first unless the signature is immutable."""
    options = dict(signature.get("options") or {})
    parent_meta = parent.meta.get("celery") or {}
    parent_id = celery_task_id(parent)
    task_id = options.get("task_id") or str(new_job_id())
    args = tuple(signature.get("args") or ())
    if not signature.get("immutable"):
        args = tuple(args_before) + args
    countdown = options.get("countdown")
    meta = {
        "root_id": parent_meta.get("root_id") or parent_id, "parent_id": parent_id,
        "group": options.get("group_id"), "group_index": options.get("group_index"),
        "timelimit": [options.get("time_limit"), options.get("soft_time_limit")],
        "headers": dict(options.get("headers") or {}), "ignore_result": bool(options.get("ignore_result", False)),
        "callbacks": options.get("link") and list(_as_list(options["link"])),
        "errbacks": options.get("link_error") and list(_as_list(options["link_error"])),
        "chain": chain or None, "chord": options.get("chord"),
    }
    if str(job_id_for(task_id)) != str(task_id):
        meta["task_id"] = str(task_id)
    return Job(
        signature["task"], args=args, kwargs=dict(signature.get("kwargs") or {}),
        queue=options.get("queue") or parent.queue,
        priority=to_chancy_priority(options["priority"]) if options.get("priority") is not None else parent.priority,
        max_attempts=1 + LOST_DELIVERY_BUDGET,
        scheduled_at=(datetime.now(timezone.utc) + timedelta(seconds=float(countdown))) if countdown else
        _parse_time(options.get("eta"), "eta"),
        expires_at=_parse_time(options.get("expires"), "expires") if isinstance(options.get("expires"), str) else None,
        limits=[Limit(Limit.Type.TIME, options["time_limit"])] if options.get("time_limit") else [],
        meta={"celery": meta}, id=job_id_for(task_id),
    )


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


# --- outbound: a row becomes the message a Celery worker consumes -------------------------
def message_from_record(record: JobRecord, *, accept: Collection[str],
                        lower_priority_first: bool = False) -> dict[str, Any]:
    """The protocol-v2 payload of a claimed row, in the kombu virtual-channel format, for
    a consumer accepting the content types ``accept``; :class:`InvalidMessage` when the
    row cannot become one (then nothing of it was decoded that ``accept`` refuses).

    The row is delivered only once due; a scheduled row still carries its ``eta`` (then
    past, so the worker runs it at once) for ``self.request.eta``, as on Redis."""
    problem = getattr(record, "problem", None)  # a row whose JSON could not be decoded
    if problem:
        raise InvalidMessage(f"the row cannot be read ({problem})")
    try:
        return _message_from_record(record, accept, lower_priority_first)
    except InvalidMessage:
        raise
    except Exception as exc:  # noqa: BLE001 - a row is untrusted input too
        raise InvalidMessage(f"{type(exc).__name__}: {exc}") from None


def _message_from_record(record: JobRecord, accept: Collection[str], lower_priority_first: bool) -> dict[str, Any]:
    celery = dict(record.meta.get("celery") or {})
    task_id = celery_task_id(record)
    timelimit = celery.get("timelimit") or [record.limit(Limit.Type.TIME), None]
    headers = dict(celery.get("headers") or {})
    headers.update({key: celery[key] for key in KEPT_HEADERS if key in celery})
    headers.update({
        "lang": "py",
        "task": record.func,
        "id": task_id,
        "retries": celery_retries(record),
        "eta": _eta(record, celery),
        "expires": record.expires_at.isoformat() if record.expires_at else None,
        "timelimit": list(timelimit),
        "root_id": celery.get("root_id") or task_id,
        "parent_id": celery.get("parent_id"),
        "group": celery.get("group"),
        # None (as app.send_task sends it) leaves the choice to the worker's task.
        "ignore_result": celery.get("ignore_result"),
    })
    embed = {key: celery.get(key) for key in EMBED_KEYS}
    args, kwargs = list(record.args), dict(record.kwargs)
    content_type, encoding = "application/json", "utf-8"
    if celery.get("payload"):  # arguments kept in their own serializer: send them that way
        stored = celery["payload"]
        if stored.get("content_type") not in accept:  # checked here, before anything is decoded
            raise InvalidMessage(
                f"its arguments are {stored.get('content_type')!r}, which this consumer does not accept "
                f"(accept_content: {sorted(accept)})")
        more_args, kwargs = payload.decode(stored, sorted(accept))
        args += more_args
        content_type, encoding, body = kombu_serialization.dumps(
            [args, kwargs, embed], serializer=kombu_serialization.registry.type_to_name[stored["content_type"]])
        body = body if isinstance(body, bytes) else body.encode(encoding)
    else:
        body = serialization.dumps([args, kwargs, embed]).encode()
    headers.setdefault("argsrepr", repr(tuple(args)))
    headers.setdefault("kwargsrepr", repr(kwargs))
    properties = {
        **(celery.get("properties") or {}),
        "correlation_id": celery.get("correlation_id") or task_id,
        "reply_to": celery.get("reply_to"),
        "delivery_mode": 2,
        "delivery_info": {"exchange": "", "routing_key": record.queue, "redelivered": _redelivered(record, celery)},
        "priority": to_celery_priority(record.priority, lower_priority_first),
        "body_encoding": "base64",
        "delivery_tag": delivery_tag(record),
    }
    return {
        "body": base64.b64encode(body).decode(),
        "content-type": content_type,
        "content-encoding": encoding,
        "headers": headers,
        "properties": properties,
    }


def _eta(record: JobRecord, celery: Mapping[str, Any]) -> str | None:
    """Celery's ``eta`` header of a row that was scheduled: its ``scheduled_at`` in UTC,
    ISO-formatted as Celery sends it. Scheduled means: published with an ``eta`` (a
    countdown), or pushed by Chancy to run after it was stored."""
    scheduled = bool(celery.get("eta")) if "digest" in celery else record.scheduled_at > record.created_at
    return record.scheduled_at.astimezone(timezone.utc).isoformat() if scheduled else None


def _redelivered(record: JobRecord, celery: Mapping[str, Any]) -> bool:
    """Whether this delivery repeats one that was not acknowledged, as kombu marks a
    restored message: it was requeued, or its previous delivery's worker was lost."""
    if celery.get("redelivered"):
        return True
    last = record.errors[-1] if record.errors else None
    return (isinstance(last, Mapping) and last.get("type") == "chancy.WorkerLost"
            and last.get("attempt") == record.attempts - 1)


def celery_retries(record: JobRecord) -> int:
    """Celery's ``retries`` of a claimed row: its deliveries before this one, counted from
    its last replacement (``Task.replace()``; see :mod:`chancy.store.pg.celery_transport`)."""
    base = (record.meta.get("celery") or {}).get("retries_base") or 0
    return max(0, record.attempts - 1 - int(base))


def delivery_tag(record: JobRecord) -> str:
    """``<row id>/<attempt>``: an ack or reject for one delivery can never touch a later
    delivery of the same row (e.g. after the task retried under the same id)."""
    return f"{record.id}/{record.attempts}"


def parse_delivery_tag(tag: object) -> tuple[uuid.UUID, int]:
    """The row and attempt of a delivery tag; anything else (a missing tag, another
    broker's) raises :class:`InvalidMessage`."""
    job_id, _, attempt = str(tag).partition("/")
    try:
        return uuid.UUID(job_id), int(attempt)
    except ValueError:
        raise InvalidMessage(f"{tag!r} is not a delivery tag of the chancy transport") from None

