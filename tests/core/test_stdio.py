"""chancy.stdio's logged stream: one log record per line written, whatever the writes'
boundaries, per thread; a line still open goes out on flush."""

from __future__ import annotations

import io
import logging
import threading

import pytest

from chancy.errors import ConfigurationError
from chancy.stdio import LoggedStream, redirect_level


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelno, record.getMessage()))


@pytest.fixture
def logged() -> tuple[LoggedStream, Records, io.StringIO]:
    logger = logging.getLogger("test.stdio")
    logger.propagate = False
    records = Records()
    logger.handlers = [records]
    original = io.StringIO()
    return LoggedStream(original, logger, logging.WARNING), records, original


def test_each_line_is_one_record_whatever_the_writes(logged):
    stream, records, _ = logged
    print("a", "b", file=stream)
    stream.write("one\ntw")
    stream.write("o\n\n")
    assert records.lines == [(logging.WARNING, "a b"), (logging.WARNING, "one"), (logging.WARNING, "two")]


def test_an_open_line_goes_out_on_flush(logged):
    stream, records, _ = logged
    print("progress…", end="", file=stream, flush=True)
    assert records.lines == [(logging.WARNING, "progress…")]


def test_threads_do_not_mix_their_lines(logged):
    stream, records, _ = logged
    stream.write("main ")
    thread = threading.Thread(target=lambda: stream.write("other\n"))
    thread.start()
    thread.join()
    stream.write("line\n")
    assert [line for _, line in records.lines] == ["other", "main line"]


def test_what_logging_itself_writes_goes_to_the_original_stream(logged):
    stream, records, original = logged

    class Echo(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            stream.write(f"handler saw {record.getMessage()}\n")

    logging.getLogger("test.stdio").addHandler(Echo())
    stream.write("hello\n")
    assert records.lines == [(logging.WARNING, "hello")]
    assert original.getvalue() == "handler saw hello\n"


def test_levels_are_read_as_celery_gives_them():
    assert redirect_level("warning") == logging.WARNING
    assert redirect_level(20) == logging.INFO
    with pytest.raises(ConfigurationError, match="WARN"):
        redirect_level("LOUD")
