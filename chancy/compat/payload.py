"""Arguments in a serializer other than JSON (pickle, msgpack, yaml…), through kombu's
serializer registry, only when the app's ``accept_content`` names it. The encoded
arguments travel in ``meta["celery"]["payload"]``; the row's own args hold only what a
workflow prepends (a parent's result)."""

from __future__ import annotations

import base64
from typing import Any, Mapping, Sequence

from kombu import serialization
from kombu.exceptions import ContentDisallowed, SerializerNotInstalled

from chancy.errors import ConfigurationError


def encode(serializer: str, accept: Sequence[str], args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, str]:
    """The payload of ``(args, kwargs)``; refused unless ``accept`` allows the serializer."""
    try:
        content_type, encoding, body = serialization.dumps((list(args), dict(kwargs)), serializer=serializer)
    except SerializerNotInstalled:
        raise ConfigurationError(f"serializer {serializer!r} is not installed in kombu's registry") from None
    if content_type not in serialization.prepare_accept_content(list(accept)):
        raise ConfigurationError(
            f"serializer {serializer!r} is not in accept_content {list(accept)}; add it there explicitly "
            "(workers must accept it too) or pass JSON-able arguments")
    raw = body if isinstance(body, bytes) else body.encode(encoding)
    return {"content_type": content_type, "encoding": encoding, "body": base64.b64encode(raw).decode()}


def decode(payload: Mapping[str, str], accept: Sequence[str]) -> tuple[list[Any], dict[str, Any]]:
    """``(args, kwargs)`` back; ContentDisallowed when this worker does not accept it."""
    raw = base64.b64decode(payload["body"])
    try:
        args, kwargs = serialization.loads(raw, payload["content_type"], payload["encoding"],
                                           accept=serialization.prepare_accept_content(list(accept)))
    except ContentDisallowed:
        raise ContentDisallowed(
            f"this worker's accept_content {list(accept)} refuses {payload['content_type']!r} arguments") from None
    return list(args), dict(kwargs)
