"""Watching a background worker's output line by line as it is written, so that a test
can wait for a line (with a timeout) while the worker keeps running."""

from __future__ import annotations

import subprocess
import threading
import time


class OutputWatcher:
    """Collects the merged stdout/stderr of ``process`` on a thread, with the time each
    line arrived."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.lines: list[tuple[float, str]] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def text(self) -> str:
        with self._changed:
            return "\n".join(line for _, line in self.lines)

    def seen(self, text: str) -> str | None:
        """The first line containing ``text``, if one arrived yet."""
        with self._changed:
            return next((line for _, line in self.lines if text in line), None)

    def wait_for(self, text: str, timeout: float) -> str:
        """The first line containing ``text``; fails the test if none arrives in time."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next((line for _, line in self.lines if text in line), None)
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (not self._reader.is_alive() and self.process.poll() is not None):
                    break
                self._changed.wait(min(remaining, 0.1))
        raise AssertionError(f"no line with {text!r} within {timeout:g}s; output so far:\n{self.text}")

    def exit_code(self, timeout: float) -> int:
        """Wait for the process to end (failing the test after ``timeout``) and read the rest."""
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout:g}s; output so far:\n{self.text}") from None
        self._reader.join(timeout=5)
        return code
