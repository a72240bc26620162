"""Running the ``chancy`` command as a subprocess, as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CHANCY_DSN"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [HERE, env.get("PYTHONPATH")]))
    env["PYTHONWARNINGS"] = "ignore"
    return env


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "chancy.cli", *args]
