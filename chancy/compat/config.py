"""``app.conf``: Celery's settings by their Celery names (old upper-case names too), with
the defaults Chancy honours, and one clear warning per key it does not."""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType
from typing import Any, Iterator, Mapping, MutableMapping

from chancy.compat.setting_names import CELERY_KEYS, OLD_NAMES

#: Settings that change behaviour here, with Celery's defaults.
SUPPORTED: dict[str, Any] = {
    "broker_url": None,
    "broker_transport_options": None,  # chancy.compat reads its "session_url" (docs/poolers.md)
    "result_backend": None,
    "include": (),
    "imports": (),
    "timezone": None,
    "enable_utc": True,
    "accept_content": ("json",),
    "task_serializer": "json",
    "result_serializer": "json",
    "result_accept_content": None,
    "task_always_eager": False,
    "task_eager_propagates": False,
    "task_store_eager_result": False,
    "task_ignore_result": False,
    "task_default_queue": "celery",
    "task_default_priority": None,
    "task_default_rate_limit": None,
    "task_queues": None,
    "task_routes": None,
    "task_annotations": None,
    "task_create_missing_queues": True,
    "task_acks_late": False,
    "task_track_started": False,
    "task_time_limit": None,
    "task_soft_time_limit": None,
    "task_publish_retry": True,
    "task_publish_retry_policy": None,
    "task_inherit_parent_priority": False,
    "beat_schedule": {},
    # Chancy's, not Celery's: whose schedules these are on a shared database (compat/beat.py).
    "beat_schedule_namespace": None,
    "worker_concurrency": None,
    "worker_pool": "prefork",
    "worker_disable_rate_limits": False,
    "worker_max_tasks_per_child": None,
    "worker_max_memory_per_child": None,
    "worker_hijack_root_logger": True,
    "worker_redirect_stdouts": True,
    "worker_redirect_stdouts_level": "WARNING",
    "result_expires": None,
}

#: Settings accepted without effect, and why that is safe.
IGNORED_BECAUSE: dict[str, str] = {
    "broker_": "connection tuning of a message broker; Chancy's broker is the Postgres DSN",
    "result_": "result-backend tuning; results live in the job row",
    "redis_": "Redis result backend settings", "cassandra_": "Cassandra backend settings",
    "s3_": "S3 backend settings", "azureblockblob_": "Azure backend settings",
    "gcs_": "GCS backend settings", "mongodb_": "MongoDB backend settings",
    "couchbase_": "Couchbase backend settings", "arangodb_": "ArangoDB backend settings",
    "cosmosdbsql_": "CosmosDB backend settings", "elasticsearch_": "Elasticsearch backend settings",
    "database_": "SQLAlchemy result backend settings; results live in the job row",
    "cache_": "cache backend settings", "control_": "AMQP control-queue settings",
    "event_": "AMQP event-queue settings", "security_": "message signing (rows are not messages)",
    "worker_": "worker tuning that the Chancy worker does not need (no timer, no broker connection; "
               "its prefetch is `chancy worker --prefetch-multiplier`)",
    "beat_": "beat is the cluster's cron plugin: no schedule file, no separate process needed",
    "task_default_exchange": "exchanges do not exist: queues are names on job rows",
    "task_default_routing_key": "exchanges do not exist: queues are names on job rows",
    "task_default_delivery_mode": "every job row is durable",
    "task_protocol": "jobs are rows, not messages",
    "task_compression": "jobs are rows, not messages",
    "task_send_sent_event": "no event stream: query the job table",
    "task_remote_tracebacks": "tracebacks are stored per attempt on the row",
    "task_repr_maxlevels": "arguments are stored, not repr'd",
    "task_create_missing_queue": "queues are names on job rows",
    "task_default_queue_type": "queues are names on job rows",
    "task_queue_max_priority": "priorities are plain integers, see migration_guide.md",
    "task_reject_on_worker_lost": "a job of a lost worker is recovered by the leader, counting an attempt",
    "task_acks_on_": "acks are row transitions; a failed job is recorded, never lost",
    "task_store_errors_even_if_ignored": "errors are always stored on the row",
    "task_retry_on_worker_lost": "a job of a lost worker is recovered by the leader",
    "task_allow_error_cb_on_chord_header": "errbacks on a chord header run like any link_error",
    "enable_utc": "Chancy stores timestamptz; times are always UTC-aware",
    "deprecated_settings": "Celery internal bookkeeping",
}

#: Settings that Celery users rely on for behaviour Chancy does not offer: never silent.
UNSUPPORTED_BECAUSE: dict[str, str] = {
    "result_chord_join_timeout": "chords are counted in the database, not joined",
    "worker_direct": "per-worker queues are not supported; route to a named queue instead",
    "result_expires": "finished rows are removed by the pruner plugin; give it a rule instead",
    "beat_scheduler": "schedules come from beat_schedule / add_periodic_task (stored in the database); "
                      "custom schedulers such as django-celery-beat's are not read",
}

_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, UserWarning, stacklevel=4)


def canonical(key: str) -> str:
    """The Celery 5 name of a setting given by its current or its pre-4.0 name."""
    return OLD_NAMES.get(key, key)


def check_key(key: str) -> None:
    """Warn once about a setting that does nothing here, saying why or what to do."""
    if key in SUPPORTED and key not in UNSUPPORTED_BECAUSE:
        return
    if key in UNSUPPORTED_BECAUSE:
        _warn_once(key, f"Celery setting {key!r} is not supported by chancy.compat: {UNSUPPORTED_BECAUSE[key]}.")
        return
    reason = next((why for prefix, why in IGNORED_BECAUSE.items() if key.startswith(prefix)), None)
    if reason is not None:
        return
    if key in CELERY_KEYS:
        _warn_once(key, f"Celery setting {key!r} has no effect in chancy.compat (see the table in migration_guide.md).")
    elif key.islower():
        _warn_once(key, f"Unknown setting {key!r}: it is not a Celery setting (typo?) and is ignored.")


class Settings(MutableMapping[str, Any]):
    """Celery's ``app.conf``: a mapping with attribute access; old names are translated."""

    def __init__(self) -> None:
        object.__setattr__(self, "_values", dict(SUPPORTED))
        object.__setattr__(self, "_changes", {})

    def __getitem__(self, key: str) -> Any:
        key = canonical(key)
        if key in self._values:
            return self._values[key]
        raise KeyError(key)

    def __setitem__(self, key: str, value: Any) -> None:
        key = canonical(key)
        check_key(key)
        self._values[key] = value
        self._changes[key] = value

    def __delitem__(self, key: str) -> None:
        key = canonical(key)
        self._changes.pop(key, None)
        if key in SUPPORTED:
            self._values[key] = SUPPORTED[key]
        else:
            del self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"No setting {key!r}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    @property
    def current(self) -> Mapping[str, Any]:
        """Every setting by its canonical name, live and read-only by contract: a hot path
        reads several settings per call without the attribute fallback of each."""
        return self._values

    @property
    def changes(self) -> Mapping[str, Any]:
        return dict(self._changes)

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        for key, value in dict(other, **kwargs).items():
            self[key] = value

    def setdefault(self, key: str, default: Any = None) -> Any:
        key = canonical(key)
        if key not in self._changes:
            self[key] = default if key not in SUPPORTED or default is not None else SUPPORTED[key]
        return self[key]

    def from_object(self, obj: Any, namespace: str | None = None) -> None:
        """Load settings from an object or ``'module'`` / ``'module:attr'`` path. With a
        namespace (``'CELERY'``), only ``CELERY_*`` names count, without the prefix."""
        if isinstance(obj, str):
            module_name, _, attr = obj.partition(":")
            obj = importlib.import_module(module_name)
            if attr:
                for piece in attr.split("."):
                    obj = getattr(obj, piece)
        items = obj.items() if isinstance(obj, Mapping) else ((k, getattr(obj, k)) for k in dir(obj))
        prefix = f"{namespace}_" if namespace else None
        for key, value in list(items):
            if key.startswith("_"):
                continue
            if prefix is not None:
                if not key.startswith(prefix):
                    continue
                key = key[len(prefix):].lower()
            elif not (key.islower() or key in OLD_NAMES):
                continue
            if canonical(key) not in CELERY_KEYS and (isinstance(value, ModuleType) or callable(value)):
                continue  # an import or a helper in a config module, not a setting
            self[key] = value
