"""Running the ``chancy`` command as a subprocess, as a user would."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Iterator

HERE = os.path.dirname(os.path.abspath(__file__))


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        try:
            return json.loads(self.out)
        except json.JSONDecodeError:
            raise AssertionError(f"not JSON (exit {self.code}):\n{self.out}\nstderr:\n{self.err}") from None


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CHANCY_DSN"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [HERE, env.get("PYTHONPATH")]))
    env["PYTHONWARNINGS"] = "ignore"
    return env


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "chancy.cli", *args]


@contextlib.contextmanager
def background(args: list[str], cwd: str = HERE, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """A long-running ``chancy`` process (a worker), killed if the block did not stop it."""
    process = subprocess.Popen(cli_command(*args), cwd=cwd, env=env or cli_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def stop(process: subprocess.Popen) -> tuple[int, str]:
    """SIGTERM, as a service manager would; the exit code and everything it printed."""
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=60)
    return process.returncode, out


def run_jobs(dsn: str, *jobs: Any, timeout: float = 60) -> list[Any]:
    """Push each :class:`~chancy.Job` from this process (an id: a job pushed already) and
    wait until each has finished (run by a worker the test started); their records, in order."""
    from chancy import Chancy, Job

    app = Chancy(dsn)
    try:
        ids = [app.push_sync(job).id if isinstance(job, Job) else job for job in jobs]
        return [app.wait_sync(job_id, timeout=timeout) for job_id in ids]
    finally:
        app.close_sync()
