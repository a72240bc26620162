"""What a worker process does with its log and with ``print()``: Celery's
``worker_redirect_stdouts``.

A task's ``print()`` (and anything written to ``sys.stdout`` / ``sys.stderr``) becomes one
log line per line written, at ``redirect_level`` (Celery's ``worker_redirect_stdouts_level``,
default WARNING), as it is written: under a pipe (systemd, Docker, a test) plain stdout is
block-buffered, so without this a task's output showed up only when the worker exited.
Threads and coroutines share the process's streams, so the streams are replaced for the
whole process, as Celery does; process-pool children apply the same :class:`WorkerOutput`
(see :mod:`chancy.executors.process`). With redirection off, the streams stay but are
made line-buffered, so that output still appears as it happens."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import sys
import threading
from typing import Iterator, TextIO

from chancy import logs
from chancy.errors import ConfigurationError

#: The logger of redirected output (Celery's is ``celery.redirected``).
REDIRECTED_LOGGER = "chancy.redirected"


class LoggedStream(io.TextIOBase):
    """A text stream that logs each complete line written to it (a line still open is
    logged on ``flush()``), kept per thread so that concurrent tasks' lines do not mix.
    Writes made while logging (a failing handler reporting its error) go to ``original``."""

    def __init__(self, original: TextIO, logger: logging.Logger, level: int) -> None:
        super().__init__()
        self.original = original
        self.logger = logger
        self.level = level
        self._local = threading.local()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.original, "encoding", None) or "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        """The original stream's descriptor: what writes to it directly bypasses the log."""
        return self.original.fileno()

    def write(self, text: str) -> int:
        if getattr(self._local, "logging", False):
            return self.original.write(text)
        pending = getattr(self._local, "pending", "") + text
        *lines, self._local.pending = pending.split("\n")
        for line in lines:
            self._log(line)
        return len(text)

    def flush(self) -> None:
        pending = getattr(self._local, "pending", "")
        if pending:
            self._local.pending = ""
            self._log(pending)

    def _log(self, line: str) -> None:
        line = line.rstrip("\r")
        if not line.strip():
            return
        self._local.logging = True
        try:
            self.logger.log(self.level, line)
        finally:
            self._local.logging = False


@dataclasses.dataclass(frozen=True)
class WorkerOutput:
    """How a worker process logs (level, ``text``/``json``) and whether ``print()`` goes
    to the log (``redirect_level``) or stays on stdout/stderr (None). Picklable: a
    process-pool child receives the worker's and applies it before loading the app."""

    log_level: str | int = "INFO"
    log_format: str = "text"
    redirect_level: int | None = logging.WARNING

    def apply(self) -> None:
        """Set up logging to the real stderr, then redirect or line-buffer the streams."""
        restore_streams()
        logs.setup(self.log_level, self.log_format, stream=sys.stderr)
        if self.redirect_level is None:
            for stream in (sys.stdout, sys.stderr):
                reconfigure = getattr(stream, "reconfigure", None)
                if reconfigure is not None:
                    reconfigure(line_buffering=True)
        else:
            logger = logging.getLogger(REDIRECTED_LOGGER)
            sys.stdout = LoggedStream(sys.stdout, logger, self.redirect_level)
            sys.stderr = LoggedStream(sys.stderr, logger, self.redirect_level)
        global _current
        _current = self


_current: WorkerOutput | None = None


def current() -> WorkerOutput | None:
    """The :class:`WorkerOutput` this process applied, if any (what children inherit)."""
    return _current


def restore_streams() -> None:
    """Put back the streams a :class:`WorkerOutput` replaced, flushing what they hold."""
    global _current
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(stream, LoggedStream):
            stream.flush()
            setattr(sys, name, stream.original)
    _current = None


@contextlib.contextmanager
def worker_output(output: WorkerOutput) -> Iterator[None]:
    """Apply ``output`` for the block (a worker's life), then restore the streams."""
    output.apply()
    try:
        yield
    finally:
        restore_streams()


def redirect_level(value: str | int | None) -> int:
    """A level given as Celery does (``"WARNING"``, ``"warning"``, ``30``) as a number,
    or a clear error naming the accepted names."""
    if isinstance(value, int):
        return value
    name = str(value).upper()
    if name not in logs.LEVELS:
        raise ConfigurationError(f"worker_redirect_stdouts_level {value!r} is not one of {', '.join(logs.LEVELS)}")
    return logging.getLevelName(name)
