"""The task API keeps the task function's parameter types (ParamSpec): mypy, run on small
programs, reports a wrong argument at the call site (``push``, ``push_sync``, ``job``,
``app.push``, compat ``.delay()`` / ``.si()`` / a direct call) and accepts a right one.

One mypy run checks every snippet: each line ending ``# wrong`` must be reported, and no
other line may be."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import chancy

pytest.importorskip("mypy", reason="mypy is in the test extras")

NATIVE = '''
from chancy import Chancy, Job

app = Chancy("postgresql://localhost/db")

@app.task
def add(x: int, y: int) -> int:
    return x + y

@app.task(queue="slow", max_attempts=3)
def greet(name: str, *, loud: bool = False) -> str:
    return name

async def calls() -> None:
    await add.push(1, 2)
    await add.push(1, "2")  # wrong
    await add.push(1)  # wrong
    add.push_sync(1, y=2)
    add.push_sync(1, z=2)  # wrong
    add.job(1, 2)
    add.job("1", 2)  # wrong
    greet.push_sync("a", loud=True)
    greet.push_sync("a", True)  # wrong
    await app.push(add, 1, 2)
    await app.push(add, 1, 2, 3)  # wrong
    app.push_sync(greet, "a")
    app.push_sync(greet, 1)  # wrong
    await app.push(Job("anything", args=(1,)))
    app.push_sync("some.task.by.name", 1, "x", k=None)
    total: int = add(1, 2)
    text: int = greet("a")  # wrong
'''

COMPAT = '''
from chancy.compat import Celery, shared_task

app = Celery("proj", broker="postgresql://localhost/db")

@app.task
def add(x: int, y: int) -> int:
    return x + y

@app.task(bind=True, max_retries=3)
def fetch(self, url: str, timeout: float = 1.0) -> bytes:
    return b""

@app.task(name="proj.mul")
def mul(x: int, y: int) -> int:
    return x * y

@shared_task
def shout(text: str) -> str:
    return text

add.delay(1, 2)
add.delay(1, "2")  # wrong
add.delay(1, 2, 3)  # wrong
fetch.delay("https://example.com", timeout=2.0)
fetch.delay(b"https://example.com")  # wrong
fetch.delay("u", tmeout=2.0)  # wrong
mul.delay(2, 3)
mul.delay(x=2)  # wrong
shout.delay("hi")
shout.delay(1)  # wrong
add.si(1, 2)
add.si(1, "2")  # wrong
add.s(1)
add.apply_async((1, 2), countdown=3)
result: int = add(1, 2)
wrong_result: str = add(1, 2)  # wrong
'''


def test_a_wrong_argument_is_reported_at_the_call_site_and_a_right_one_is_not(tmp_path):
    for name, source in (("native_calls.py", NATIVE), ("compat_calls.py", COMPAT)):
        (tmp_path / name).write_text(textwrap.dedent(source))
    repo = Path(chancy.__file__).resolve().parent.parent  # the chancy under test, by source
    # In a process of its own: mypy run in this one raises the interpreter's recursion
    # limit for good, which changes what later tests (a too-deep row) see.
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / ".mypy_cache"), "--follow-imports", "silent",
         "--ignore-missing-imports", "--no-error-summary", "--show-error-codes",
         str(tmp_path / "native_calls.py"), str(tmp_path / "compat_calls.py")],
        env={**os.environ, "MYPYPATH": str(repo)}, capture_output=True, text=True, timeout=300)
    stdout, stderr, status = done.stdout, done.stderr, done.returncode
    assert status in (0, 1), f"mypy could not run:\n{stdout}\n{stderr}"
    reported: dict[str, set[int]] = {}
    for match in re.finditer(r"^(\S+?\.py):(\d+): error:", stdout, re.MULTILINE):
        reported.setdefault(Path(match[1]).name, set()).add(int(match[2]))
    for name in ("native_calls.py", "compat_calls.py"):
        lines = (tmp_path / name).read_text().splitlines()
        wrong = {i for i, line in enumerate(lines, 1) if line.rstrip().endswith("# wrong")}
        got = reported.get(name, set())
        missed = [lines[i - 1].strip() for i in sorted(wrong - got)]
        false = [lines[i - 1].strip() for i in sorted(got - wrong)]
        assert not missed, f"{name}: mypy accepted wrong calls {missed}\n{stdout}"
        assert not false, f"{name}: mypy reported right calls {false}\n{stdout}"
