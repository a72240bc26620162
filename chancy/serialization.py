"""JSON for arguments and results, through kombu's encoder so that datetimes, UUIDs,
Decimals and bytes round-trip exactly as they do in Celery."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from kombu.utils import json as kombu_json

from chancy.errors import SerializationError


def dumps(value: Any) -> str:
    return kombu_json.dumps(value)


def loads(text: str | bytes) -> Any:
    return kombu_json.loads(text)


def dumps_arguments(func: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[str, str]:
    """Serialise a job's arguments, naming the first argument that cannot be stored."""
    try:
        return dumps(list(args)), dumps(dict(kwargs))
    except (TypeError, ValueError) as exc:
        named = [(f"args[{i}]", value) for i, value in enumerate(args)]
        named += [(f"kwargs[{key!r}]", value) for key, value in kwargs.items()]
        for label, value in named:
            try:
                dumps(value)
            except (TypeError, ValueError) as inner:
                raise SerializationError(
                    f"Argument {label} of task {func!r} cannot be stored as JSON "
                    f"({type(value).__name__}: {inner}). Pass plain data (str, int, float, "
                    "bool, None, list, dict, datetime, UUID, Decimal, bytes) and load "
                    "richer objects inside the task."
                ) from None
        raise SerializationError(f"Arguments of task {func!r} cannot be stored as JSON: {exc}") from None
