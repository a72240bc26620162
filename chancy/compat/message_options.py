"""Which ``apply_async`` options Celery consumes itself, and which it passes on as message
properties: an option it does not know (``app_id="1234"``) becomes a property of the
message, which the worker shows the task as ``self.request.properties``."""

from __future__ import annotations

import functools
import os
import socket
from typing import Any, Mapping

#: Options that steer the call (Celery's ``apply_async`` / ``send_task_message`` arguments,
#: plus ``chancy.compat``'s own); every other option is a message property.
CONSUMED_OPTIONS = frozenset({
    "add_to_parent", "argsrepr", "callbacks", "chain", "chord", "compression", "connection", "countdown",
    "create_sent_event", "declare", "delivery_mode", "errbacks", "eta", "event_dispatcher", "exchange",
    "exchange_type", "expires", "group_id", "group_index", "headers", "ignore_result", "immutable",
    "kwargsrepr", "link", "link_error", "now", "on_commit", "origin", "parent_id", "priority", "producer",
    "queue", "replaced_task_nesting", "reply_to", "retries", "retry", "retry_policy", "root_id",
    "routing_key", "serializer", "shadow", "soft_time_limit", "stamped_headers", "stamps", "subtask_type",
    "task_id", "throw", "time_limit", "timezone", "track_started", "acks_late", "rate_limit",
})


def message_properties(options: Mapping[str, Any]) -> dict[str, Any]:
    """The options Celery would send as message properties (JSON-storable values only)."""
    stamped = set(options.get("stamped_headers") or ())
    return {key: value for key, value in options.items()
            if key not in CONSUMED_OPTIONS and key not in stamped and _plain(value)}


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool, list, dict))


def origin() -> str:
    """Celery's ``origin`` header: the node that sent the task (``gen<pid>@<host>``)."""
    return _origin_of(os.getpid())


@functools.lru_cache(maxsize=4)  # once per process, not once per task sent
def _origin_of(pid: int) -> str:
    return f"gen{pid}@{socket.gethostname()}"
