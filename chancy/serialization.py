"""JSON for arguments and results, through kombu's encoder so that datetimes, UUIDs,
Decimals and bytes round-trip exactly as they do in Celery."""

from __future__ import annotations

import json
import threading
from json.encoder import c_make_encoder, encode_basestring, encode_basestring_ascii
from typing import Any, Callable, Mapping, Sequence

from kombu.utils import json as kombu_json

from chancy.errors import SerializationError


# One encoder and one decoder for the process: kombu's own dumps/loads build a new one per
# call, which was a measurable share of the worker's per-job cost. The output is identical.
_ENCODER = kombu_json.JSONEncoder()
_DECODER = json.JSONDecoder(object_hook=kombu_json.object_hook)


class _Encoders(threading.local):
    """Per thread, the C encoder that ``_ENCODER.encode`` builds anew on every call (that
    build was ~2/3 of encoding a short argument list). Its record of the containers being
    encoded (for circular references) is per thread and dropped after a failed encode."""

    def get(self) -> Callable[[Any, int], Any]:
        encoder = self.__dict__.get("encoder")
        if encoder is None:
            e = _ENCODER
            encoder = self.encoder = c_make_encoder(
                {} if e.check_circular else None, e.default,
                encode_basestring_ascii if e.ensure_ascii else encode_basestring,
                e.indent, e.key_separator, e.item_separator, e.sort_keys, e.skipkeys, e.allow_nan)
        return encoder

    def drop(self) -> None:
        self.__dict__.pop("encoder", None)


_encoders = _Encoders()
_ACCELERATED = c_make_encoder is not None and _ENCODER.indent is None  # else encode as built


def dumps(value: Any) -> str:
    if value is None:  # what most tasks return
        return "null"
    if not _ACCELERATED:
        return _ENCODER.encode(value)
    try:
        return "".join(_encoders.get()(value, 0))
    except BaseException:
        _encoders.drop()
        raise


def loads(text: str | bytes) -> Any:
    if text == "[]":  # most args, limits and errors columns: skip the parser
        return []
    if text == "{}":
        return {}
    if not isinstance(text, str):
        text = bytes(text).decode("utf-8")
    try:  # column text has no surrounding whitespace: skip decode()'s two regex scans for it
        value, end = _DECODER.raw_decode(text)
    except ValueError:
        end = -1
    return value if end == len(text) else _DECODER.decode(text)  # else: decode's own error


def dumps_arguments(func: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[str, str]:
    """Serialise a job's arguments, naming the first argument that cannot be stored."""
    try:  # empty arguments (most kwargs) skip the encoder; a tuple encodes as a list
        return (dumps(args) if args else "[]"), (dumps(kwargs) if kwargs else "{}")
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
