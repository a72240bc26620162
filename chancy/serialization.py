"""JSON for arguments and results, through kombu's encoder so that datetimes, UUIDs,
Decimals and bytes round-trip exactly as they do in Celery."""

from __future__ import annotations

import json
import math
import re
import threading
# c_make_encoder: json's C encoder, or None without the C accelerator; typeshed leaves it out.
from json.encoder import c_make_encoder, encode_basestring, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any, Callable, Mapping, Sequence

from kombu.utils import json as kombu_json

from chancy.errors import SerializationError


# One encoder and one decoder for the process: kombu's own dumps/loads build a new one per
# call, which was a measurable share of the worker's per-job cost. The output is kombu's,
# except that NaN and Infinity are refused: they are not JSON, and jsonb rejects them.
_ENCODER = kombu_json.JSONEncoder(allow_nan=False)
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
    """JSON that Postgres' jsonb accepts; ValueError saying what to change otherwise."""
    if value is None:  # what most tasks return
        return "null"
    try:
        text = _encode(value)
    except ValueError as exc:
        if str(exc).startswith("Out of range float"):
            raise ValueError("NaN and Infinity are not JSON numbers: pass None or a string instead") from None
        raise
    except RecursionError:
        raise ValueError("the value is nested too deeply to store: flatten it") from None
    problem = unstorable(text)
    if problem is not None:
        raise ValueError(problem)
    return text


def _encode(value: Any) -> str:
    if not _ACCELERATED:
        return _ENCODER.encode(value)
    try:
        return "".join(_encoders.get()(value, 0))
    except BaseException:
        _encoders.drop()
        raise


#: The escapes of (ASCII-only) JSON text that matter to jsonb, scanned left to right so an
#: escaped backslash is never read as the start of an escape: ``\\``, ``\u0000``, a
#: surrogate pair, or a lone surrogate.
_ESCAPES = re.compile(r"\\(?:\\|u0000|ud[89ab][0-9a-f]{2}\\ud[c-f][0-9a-f]{2}|ud[89a-f][0-9a-f]{2})")


def unstorable(text: str) -> str | None:
    """Why jsonb would refuse this JSON text of ours, or None. Postgres text cannot hold
    the NUL character, and a lone UTF-16 surrogate is not Unicode; both are valid JSON."""
    if "\\u0000" not in text and "\\ud" not in text:  # the common case: one scan each
        return None
    for escape in _ESCAPES.finditer(text):
        token = escape.group()
        if token == "\\u0000":
            return ("a string contains the NUL character (\\x00), which Postgres cannot store: "
                    "strip it, or pass the data as bytes")
        if len(token) == 6:
            return (f"a string contains an unpaired surrogate ({token}), which is not valid "
                    "Unicode: fix the text's encoding, or pass it as bytes")
    return None


def storable_text(text: str) -> str:
    """``text`` made storable: NUL and unpaired surrogates written as backslash escapes.
    For what must be kept whatever it holds, such as an error message."""
    if text.isascii() and "\x00" not in text:
        return text
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def storable(value: Any) -> Any:
    """``value`` with every string made storable and every non-finite float written as a
    string: for data that describes a failure and must never fail to be written itself."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {storable_text(str(k)): storable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [storable(v) for v in value]
    return value


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


def dumps_meta(func: str, meta: Mapping[str, Any]) -> str:
    """Serialise a job's meta, saying whose it is when it cannot be stored (every store
    refuses such a job with the same error)."""
    try:
        return dumps(dict(meta))
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"Job meta of task {func!r} cannot be stored as JSON: {exc}") from None


def dumps_arguments(func: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[str, str]:
    """Serialise a job's arguments, naming the first argument that cannot be stored."""
    try:  # empty arguments (most kwargs) skip the encoder; a tuple encodes as a list
        return (dumps(args) if args else "[]"), (dumps(kwargs) if kwargs else "{}")
    except (TypeError, ValueError, RecursionError) as exc:
        named = [(f"args[{i}]", value) for i, value in enumerate(args)]
        named += [(f"kwargs[{key!r}]", value) for key, value in kwargs.items()]
        for label, value in named:
            try:
                dumps(value)
            except (TypeError, ValueError, RecursionError) as inner:
                raise SerializationError(
                    f"Argument {label} of task {func!r} cannot be stored as JSON "
                    f"({type(value).__name__}: {inner}). Pass plain data (str, int, float, "
                    "bool, None, list, dict, datetime, UUID, Decimal, bytes) and load "
                    "richer objects inside the task."
                ) from None
        raise SerializationError(f"Arguments of task {func!r} cannot be stored as JSON: {exc}") from None
