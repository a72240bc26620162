"""Schedule namespaces: which app a periodic schedule belongs to.

Several apps often share one database (every project on a laptop shares the embedded
server). Each app syncs, lists and fires only the schedules of its own namespace, so one
app's worker never fires another's tasks and one app's ``chancy beat`` never deletes
another's schedules (see :mod:`chancy.plugins.cron`)."""

from __future__ import annotations

from chancy.errors import ConfigurationError

#: The namespace of an app that names none (a ``Chancy`` app without ``namespace=``, a
#: Celery app without a main name); also where schedules stored before namespaces existed
#: by ``Cron.schedule`` live.
DEFAULT_NAMESPACE = "default"

MAX_LENGTH = 200


def validate_namespace(namespace: object) -> str:
    """``namespace`` if it can name an app's schedules, else a ConfigurationError."""
    if (not isinstance(namespace, str) or not namespace or namespace != namespace.strip()
            or len(namespace) > MAX_LENGTH or not namespace.isprintable()):
        raise ConfigurationError(
            f"A schedule namespace must be a non-empty printable name of at most {MAX_LENGTH} characters "
            f"without surrounding spaces (e.g. the project's name), got {namespace!r}")
    return namespace
