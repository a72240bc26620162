"""Jobs: the immutable spec a caller pushes, and the stored row a worker reads back."""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import random
import struct
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

if TYPE_CHECKING:
    from chancy.app import Chancy


class JobState(str, enum.Enum):
    """Where a job is in its life. Terminal states never change again."""

    PENDING = "pending"  # runnable now
    SCHEDULED = "scheduled"  # runnable once scheduled_at has passed
    RUNNING = "running"
    RETRYING = "retrying"  # failed an attempt, runnable again at scheduled_at
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def is_finished(self) -> bool:
        return self in FINISHED_STATES


FINISHED_STATES = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED}
)
LIVE_STATES = frozenset(
    {JobState.PENDING, JobState.SCHEDULED, JobState.RUNNING, JobState.RETRYING}
)


@dataclasses.dataclass(frozen=True)
class Limit:
    """A resource limit enforced by the executor that runs the job."""

    class Type(str, enum.Enum):
        TIME = "time"  # seconds of wall-clock time per attempt
        MEMORY = "memory"  # bytes of resident memory

    type: Type
    value: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", Limit.Type(self.type))
        if not isinstance(self.value, (int, float)) or not 0 < self.value < math.inf:
            raise ValueError(f"Limit {self.type.value} must be a positive finite number, got {self.value!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type.value, "value": self.value}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Limit":
        return cls(Limit.Type(data["type"]), data["value"])


class Jitter(enum.Enum):
    """How a backoff's delay is spread, so that a burst of failures does not come back as a
    burst of retries."""

    NONE = "none"
    #: Uniform over the delay's upper half (:class:`Backoff`'s).
    HALF = "half"
    #: A whole number of seconds, uniform from 0 to the delay (Celery's ``retry_jitter``).
    FULL = "full"


def backoff_delay(retry_number: int, *, base: float, factor: float, maximum: float, jitter: Jitter) -> float:
    """Seconds before retry ``retry_number`` (1-based): ``min(maximum, base *
    factor**(n-1))``, spread by ``jitter``. The one backoff of every retry: a job's own
    (:class:`Backoff`), of an attempt lost with its worker (recovery), and of Celery's
    autoretry (``factor * 2**retries``: base ``factor``, factor 2)."""
    delay = min(maximum, base * factor ** max(0, retry_number - 1))
    if jitter is Jitter.HALF:
        delay = random.uniform(delay / 2, delay)
    elif jitter is Jitter.FULL:
        delay = random.randrange(int(delay) + 1)
    return max(0, delay)


@dataclasses.dataclass(frozen=True)
class Backoff:
    """Delay before retry ``n`` (1-based): ``min(maximum, base * factor**(n-1))``.

    With ``jitter`` the delay is drawn uniformly from its upper half, so a burst of
    failures does not come back as a burst of retries.
    """

    base: float = 1.0
    factor: float = 2.0
    maximum: float = 3600.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if not (0 <= self.base < math.inf and 1 <= self.factor < math.inf and 0 <= self.maximum < math.inf):
            raise ValueError("Backoff needs finite numbers: base >= 0, factor >= 1 and maximum >= 0")

    def delay(self, retry_number: int) -> float:
        return backoff_delay(retry_number, base=self.base, factor=self.factor, maximum=self.maximum,
                             jitter=Jitter.HALF if self.jitter else Jitter.NONE)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "Backoff":
        return cls(**data) if data else cls()


#: The backoff of a job pushed without one.
DEFAULT_BACKOFF = Backoff()


def task_name(func: Any) -> str:
    """The registered name of a task object, or ``module.qualname`` of a plain callable."""
    if isinstance(func, str):
        return func
    name = getattr(func, "name", None)
    if isinstance(name, str):
        return name
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        raise TypeError(
            f"{func!r} cannot be a task: it needs an importable module-level name "
            "(lambdas and nested functions cannot be found by a worker)"
        )
    return f"{module}.{qualname}"


_uuid_lock = threading.Lock()
_uuid_last_ms = 0
_uuid_seq = 0


_RANDOM_BITS = (1 << 62) - 1


def _stamp(ms: int) -> int:
    """The time-ordered high bits of the next id (call with ``_uuid_lock`` held)."""
    global _uuid_last_ms, _uuid_seq
    if ms <= _uuid_last_ms:
        _uuid_seq += 1
        if _uuid_seq >= 1 << 12:  # sequence exhausted within one ms: borrow the next ms
            _uuid_last_ms += 1
            _uuid_seq = 0
    else:
        _uuid_last_ms, _uuid_seq = ms, random.getrandbits(8)
    return (_uuid_last_ms << 80) | (0x7 << 76) | (_uuid_seq << 64) | (0b10 << 62)


#: Random words read from the OS ahead of single ids, a batch at a time: a read per id was
#: a system call (~1 µs) in every push. Dropped in a forked child, which must not hand out
#: its parent's. Used with ``_uuid_lock`` held.
_noise: list[int] = []
_NOISE_BATCH = 256
os.register_at_fork(after_in_child=_noise.clear)


def new_job_id() -> uuid.UUID:
    """A UUIDv7: time-ordered (so ``ORDER BY id`` is FIFO), monotonic within a process."""
    with _uuid_lock:
        stamp = _stamp(time.time_ns() // 1_000_000)
        if not _noise:
            _noise.extend(struct.unpack(f">{_NOISE_BATCH}Q", os.urandom(8 * _NOISE_BATCH)))
        rand = _noise.pop()
    return _uuid(stamp | (rand & _RANDOM_BITS))


def new_job_ids(count: int) -> list[uuid.UUID]:
    """``count`` of :func:`new_job_id` in increasing order, with one clock read, one lock
    and one read of the OS's randomness for a whole bulk push."""
    with _uuid_lock:
        ms = time.time_ns() // 1_000_000
        stamps = [_stamp(ms) for _ in range(count)]
    noise = struct.unpack(f">{count}Q", os.urandom(8 * count))
    return [_uuid(stamp | (rand & _RANDOM_BITS)) for stamp, rand in zip(stamps, noise, strict=True)]


def _uuid(value: int) -> uuid.UUID:
    """``uuid.UUID(int=value)`` for a value known to be a valid 128-bit UUID: the same two
    fields that constructor sets, without its argument checks (a third of its cost)."""
    made = _new(uuid.UUID)
    _set(made, "int", value)
    _set(made, "is_safe", _UNKNOWN)
    return made


_new, _set, _UNKNOWN = object.__new__, object.__setattr__, uuid.SafeUUID.unknown
_CHECK = (1 << 127) | 12345
if _uuid(_CHECK) != uuid.UUID(int=_CHECK) or str(_uuid(_CHECK)) != str(uuid.UUID(int=_CHECK)):
    _uuid = lambda value: uuid.UUID(int=value)  # noqa: E731 - a UUID whose layout changed


#: The range of the job row's integer columns (Postgres ``int``).
INT4_MIN, INT4_MAX = -(2**31), 2**31 - 1


def is_argument_list(args: Any) -> bool:
    """Whether ``args`` can be a call's positional arguments: a sequence, not a string.
    Lists and tuples skip the ``Sequence`` isinstance check (~2 µs, once per push)."""
    return type(args) is tuple or type(args) is list or (
        not isinstance(args, (str, bytes)) and isinstance(args, Sequence))


@dataclasses.dataclass(frozen=True)
class Job:
    """What to run, where and how. Immutable: derive variants with :meth:`with_options`."""

    func: str
    args: tuple = ()
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    queue: str = "default"
    priority: int = 0
    max_attempts: int = 1
    scheduled_at: datetime | None = None
    expires_at: datetime | None = None
    unique_key: str | None = None
    limits: tuple[Limit, ...] = ()
    backoff: Backoff | None = None
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    id: uuid.UUID | None = None
    #: At most ``concurrency`` jobs of this queue with this key run at once, across the
    #: cluster; the others wait, without using an attempt (see docs/scaling.md).
    concurrency_key: str | None = None
    concurrency: int | None = None

    def __init__(
        self,
        func: Callable[..., Any] | str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        queue: str = "default",
        priority: int = 0,
        max_attempts: int = 1,
        scheduled_at: datetime | None = None,
        expires_at: datetime | None = None,
        unique_key: str | None = None,
        limits: Sequence[Limit] = (),
        backoff: Backoff | None = None,
        meta: Mapping[str, Any] | None = None,
        id: uuid.UUID | str | None = None,
        concurrency_key: str | None = None,
        concurrency: int | None = None,
    ) -> None:
        if concurrency_key is not None or concurrency is not None:
            concurrency = checked_concurrency(concurrency_key, concurrency)
        if not isinstance(max_attempts, int) or not 1 <= max_attempts <= INT4_MAX:
            raise ValueError(f"max_attempts must be an integer from 1 to {INT4_MAX}, got {max_attempts!r}")
        if not isinstance(priority, int):
            raise TypeError(f"priority must be an integer, got {priority!r}")
        if not INT4_MIN <= priority <= INT4_MAX:
            raise ValueError(f"priority must be from {INT4_MIN} to {INT4_MAX} (higher runs first), got {priority!r}")
        if not isinstance(queue, str) or not queue:
            raise ValueError(f"queue must be a non-empty string, got {queue!r}")
        if unique_key is not None and not isinstance(unique_key, str):
            raise TypeError(f"unique_key must be a string or None, got {type(unique_key).__name__}")
        if not is_argument_list(args):
            raise TypeError(f"args must be a list or tuple, got {type(args).__name__}")
        for when, label in ((scheduled_at, "scheduled_at"), (expires_at, "expires_at")):
            if when is not None and (not isinstance(when, datetime) or when.tzinfo is None):
                raise ValueError(f"{label} must be a timezone-aware datetime, got {when!r}")
        func = task_name(func)
        if "\x00" in func or "\x00" in queue or (unique_key is not None and "\x00" in unique_key):
            for label, text in (("task name", func), ("queue", queue), ("unique_key", unique_key)):
                if text is not None and "\x00" in text:
                    raise ValueError(f"The {label} {text!r} contains a NUL character (\\x00), "
                                     "which Postgres cannot store")
        # One update of the frozen instance's fields, where a setattr per field cost ~1 µs
        # of every push.
        self.__dict__.update(
            func=func, args=tuple(args), kwargs=dict(kwargs or {}), queue=queue, priority=priority,
            max_attempts=max_attempts, scheduled_at=scheduled_at, expires_at=expires_at, unique_key=unique_key,
            limits=tuple(limits), backoff=backoff, meta=dict(meta or {}),
            id=id if id is None or type(id) is uuid.UUID else uuid.UUID(str(id)),
            concurrency_key=concurrency_key, concurrency=concurrency,
        )

    def with_options(self, **changes: Any) -> "Job":
        """A copy with some fields changed, e.g. ``job.with_options(priority=5)``."""
        unknown = changes.keys() - _JOB_FIELDS
        if unknown:
            raise TypeError(f"Job has no option(s) {sorted(unknown)}; valid: {sorted(_JOB_FIELDS)}")
        return Job(**{**self.__dict__, **changes})

    def with_arguments(self, args: tuple, kwargs: dict[str, Any]) -> "Job":
        """A copy calling with these arguments, every other field already validated: what
        each ``task.push(...)`` builds, so it skips :meth:`with_options`' checks. ``args``
        and ``kwargs`` are taken as given (a call's own ``*args`` and ``**kwargs``)."""
        job = object.__new__(Job)
        job.__dict__.update(self.__dict__, args=args, kwargs=kwargs, meta=dict(self.meta))  # meta: not shared
        return job

    def after(self, seconds: float) -> "Job":
        """A copy scheduled ``seconds`` from now."""
        return self.with_options(scheduled_at=datetime.now(timezone.utc) + timedelta(seconds=seconds))

    def limit(self, kind: Limit.Type) -> float | None:
        return next((lim.value for lim in self.limits if lim.type == kind), None)


_JOB_FIELDS = frozenset(f.name for f in dataclasses.fields(Job))


def checked_concurrency(key: Any, concurrency: Any) -> int:
    """The limit of a job with concurrency ``key`` (1 when not given), or a clear error
    for a key that is not a storable string or a limit that is not a whole number from 1."""
    if not isinstance(key, str):
        raise TypeError(f"concurrency_key must be a string, got {type(key).__name__}"
                        + (" (concurrency limits the running jobs of one key: give one)" if key is None else ""))
    if "\x00" in key:
        raise ValueError(f"The concurrency_key {key!r} contains a NUL character (\\x00), which Postgres cannot store")
    if concurrency is None:
        return 1
    if type(concurrency) is not int or not 1 <= concurrency <= INT4_MAX:
        raise ValueError(f"concurrency must be an integer from 1 to {INT4_MAX}, got {concurrency!r}")
    return concurrency


@dataclasses.dataclass(frozen=True)
class JobRecord:
    """One stored job row, as read back from its queue."""

    id: uuid.UUID
    queue: str
    func: str
    args: tuple
    kwargs: dict[str, Any]
    priority: int
    state: JobState
    attempts: int
    max_attempts: int
    scheduled_at: datetime
    expires_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    taken_by: str | None
    unique_key: str | None
    limits: tuple[Limit, ...]
    backoff: Backoff | None
    meta: dict[str, Any]
    result: Any
    errors: list[dict[str, Any]]
    concurrency_key: str | None = None
    concurrency: int | None = None

    @classmethod
    def from_fields(cls, **fields: Any) -> "JobRecord":
        """A record from all of its fields, without the generated ``__init__``: a frozen
        dataclass sets each of its 23 fields through ``object.__setattr__`` (~3 µs), a
        tenth of a worker's CPU per no-op job. Only for the row mapping, which names every
        field (a test compares it with the generated ``__init__``)."""
        record = object.__new__(cls)
        record.__dict__.update(fields)
        return record

    def limit(self, kind: Limit.Type) -> float | None:
        return next((lim.value for lim in self.limits if lim.type == kind), None) if self.limits else None

    def retry_delay(self) -> float:
        """Seconds the job waits before its next attempt, after this one failed: its
        backoff's (the default one's without), for the attempts counted so far."""
        return (self.backoff or DEFAULT_BACKOFF).delay(self.attempts)

    @property
    def is_finished(self) -> bool:
        return self.state.is_finished

    @property
    def traceback(self) -> str | None:
        """The traceback of the latest failed attempt, if any."""
        return self.errors[-1].get("traceback") if self.errors else None


class UndecodableRecord(JobRecord):
    """A row whose stored JSON could not be decoded: its arguments, limits and meta are
    empty, and ``problem`` says what failed. A worker fails such a job at once."""

    problem: str = ""


class Reference:
    """A handle on a pushed job: wait for it, read it, cancel it (async and sync)."""

    __slots__ = ("app", "id", "queue")

    def __init__(self, app: "Chancy", id: uuid.UUID, queue: str) -> None:
        self.app = app
        self.id = id
        self.queue = queue

    def __repr__(self) -> str:
        return f"<Reference {self.id} queue={self.queue!r}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Reference) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    async def get(self) -> JobRecord | None:
        """The job's row as it is now; None once it is gone (deleted, or pruned)."""
        return await self.app.get_job(self)

    async def wait(self, timeout: float | None = None) -> JobRecord:
        """The finished record; ``TimeoutError`` if it is not finished within ``timeout``."""
        return await self.app.wait(self, timeout=timeout)

    async def cancel(self) -> bool:
        return await self.app.cancel(self)

    def get_sync(self) -> JobRecord | None:
        return self.app.get_job_sync(self)

    def wait_sync(self, timeout: float | None = None) -> JobRecord:
        return self.app.wait_sync(self, timeout=timeout)

    def cancel_sync(self) -> bool:
        return self.app.cancel_sync(self)
