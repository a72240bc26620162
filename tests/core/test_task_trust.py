"""What ``execution.resolve`` lets run: registered tasks, and functions defined under an
allowed import prefix; nothing else, and no module outside those prefixes is imported
just to look a name up (importing runs the module's code)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from chancy import Job, JobState, Queue, execution
from chancy.errors import ConfigurationError, UnknownTaskError
from chancy.testing import running_worker

MODULE = '''
import os
from pathlib import Path
Path({marker!r}).write_text("imported")

def make_dir(path):
    os.mkdir(path)
    return path
'''


@pytest.fixture(autouse=True)
def no_allowed_imports(monkeypatch):
    """Each test starts with nothing allowed (grants are per process and never taken back)."""
    monkeypatch.setattr(execution, "_granted", ())
    monkeypatch.delenv(execution.ALLOWED_IMPORTS_ENV, raising=False)


@pytest.fixture
def package(tmp_path, monkeypatch) -> Path:
    """An importable ``trusted_pkg.jobs`` that writes ``imported`` to a marker file when
    imported; the marker's path is returned."""
    marker = tmp_path / "imported"
    (tmp_path / "trusted_pkg").mkdir()
    (tmp_path / "trusted_pkg" / "__init__.py").write_text("")
    (tmp_path / "trusted_pkg" / "jobs.py").write_text(MODULE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield marker
    for name in ("trusted_pkg", "trusted_pkg.jobs"):
        sys.modules.pop(name, None)


def test_an_unregistered_name_is_refused_without_importing_its_module(package):
    with pytest.raises(UnknownTaskError, match="not registered.*--allow-import"):
        execution.resolve("trusted_pkg.jobs.make_dir")
    assert not package.exists() and "trusted_pkg.jobs" not in sys.modules
    with pytest.raises(UnknownTaskError):
        execution.resolve("os.system")


def test_an_allowed_prefix_covers_its_modules_and_their_submodules_only(package, monkeypatch):
    assert execution.allow_imports("trusted_pkg") == ("trusted_pkg",)  # a string is one prefix
    assert execution.resolve("trusted_pkg.jobs.make_dir").__module__ == "trusted_pkg.jobs"
    assert execution.resolve("trusted_pkg.jobs:make_dir").__name__ == "make_dir"
    monkeypatch.setattr(execution, "_granted", ())
    execution.allow_imports(["trusted_pkg.job"])
    with pytest.raises(UnknownTaskError, match=r"allowed imports \(trusted_pkg.job\)"):
        execution.resolve("trusted_pkg.jobs.make_dir")


@pytest.mark.parametrize("name", ["trusted_pkg.jobs.os.mkdir", "trusted_pkg.jobs.Path.touch",
                                  "trusted_pkg.jobs.make_dir.__globals__", "trusted_pkg.jobs.print"])
def test_an_allowed_module_is_no_way_to_a_callable_defined_elsewhere(package, name):
    execution.allow_imports(["trusted_pkg"])
    with pytest.raises(UnknownTaskError):
        execution.resolve(name)


def test_allowed_imports_from_the_environment(package, monkeypatch):
    monkeypatch.setenv(execution.ALLOWED_IMPORTS_ENV, "other.jobs, trusted_pkg.jobs")
    assert execution.allowed_imports() == ("other.jobs", "trusted_pkg.jobs")
    assert execution.resolve("trusted_pkg.jobs.make_dir").__name__ == "make_dir"


@pytest.mark.parametrize("prefix", ["", "*", "trusted_pkg.", "trusted_pkg.*", "../etc", "a b"])
def test_a_malformed_prefix_is_a_configuration_error(prefix, monkeypatch):
    with pytest.raises(ConfigurationError, match="is not a module prefix"):
        execution.allow_imports([prefix])
    monkeypatch.setenv(execution.ALLOWED_IMPORTS_ENV, f"{prefix}x.y!")
    with pytest.raises(ConfigurationError, match=execution.ALLOWED_IMPORTS_ENV):
        execution.allowed_imports()


def test_a_registered_name_needs_no_allowance():
    execution.registry["trust.custom-name"] = len
    try:
        assert execution.resolve("trust.custom-name") is len
    finally:
        del execution.registry["trust.custom-name"]


@pytest.mark.parametrize("executor", ["asyncio", "thread", "process"])
async def test_an_app_allowing_a_module_runs_its_functions_in_every_executor(make_app, package, tmp_path, executor):
    """``Chancy(allowed_imports=…)``; process-pool children get the allowance too."""
    app = await make_app(Queue("default", executor=executor), allowed_imports=["trusted_pkg.jobs"])
    assert app.allowed_imports == ("trusted_pkg.jobs",)
    made, foreign = tmp_path / "made", tmp_path / "foreign"
    allowed = await app.push(Job("trusted_pkg.jobs.make_dir", args=[str(made)]))
    chained = await app.push(Job("trusted_pkg.jobs.os.mkdir", args=[str(foreign)], max_attempts=3))
    async with running_worker(app):
        assert (await allowed.wait(timeout=30)).state is JobState.SUCCEEDED
        refused = await chained.wait(timeout=30)
    assert made.is_dir() and not foreign.exists()
    assert refused.state is JobState.FAILED and refused.attempts == 1
    assert "UnknownTaskError" in refused.errors[0]["type"]
