"""The pytest plugin, used by a test project as a user would (pytest's ``pytester``): its
passing tests pass, and its failing assertions fail with messages that say what was
pushed instead."""

from __future__ import annotations

import os
import re
import shutil

import pytest

pytest_plugins = ["pytester"]

PROJECT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "project")


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    for name in os.listdir(PROJECT):
        if name.endswith(".py"):
            shutil.copy(os.path.join(PROJECT, name), pytester.path / name)
    pytester.makeini("[pytest]\nchancy_app = shop:app\nasyncio_mode = auto\n"
                     "asyncio_default_fixture_loop_scope = function\n")
    return pytester


def test_a_project_using_the_plugin(project: pytest.Pytester, pg_admin_dsn: str) -> None:
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "--chancy-dsn", pg_admin_dsn, "-q",
                                          "-W", "ignore::DeprecationWarning", timeout=240)
    output = result.stdout.str()
    failed = sorted(set(re.findall(r"FAILED \S+::(\w+)", output)))
    assert failed == ["test_fails_count", "test_fails_drained_job", "test_fails_nothing_of_that_task",
                      "test_fails_refuted_push", "test_fails_wrong_arguments"], output
    result.assert_outcomes(passed=12, failed=5)
    for expected in [
        "Expected a job shop.add(args=[9, 9]) to be pushed, found 0.",
        "Jobs of shop.add that were pushed (1):",
        "  - shop.add(args=[1, 2], kwargs={}) on queue 'default', pending",
        "No job of shop.send_receipt was pushed; jobs of other tasks were: shop.add.",
        "Expected no job shop.add(args=[1, 2]) to be pushed, found 1:",
        "Expected 1 job(s) shop.add(args=[1, 2]) to be pushed, found 2.",
        "--- shop.broken (job ",
        "ValueError: the warehouse is on fire",
    ]:
        assert expected in output, f"{expected!r} missing from:\n{output}"
    assert "raise ValueError" in output  # the failed job's traceback is shown


@pytest.mark.parametrize("pool", ["process", "thread", "solo"])
def test_the_worker_fixtures_under_every_pool(project: pytest.Pytester, pg_admin_dsn: str, pool: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The project's worker tests again, its queues on each other pool (asyncio ran above)."""
    monkeypatch.setenv("SHOP_POOL", pool)
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "--chancy-dsn", pg_admin_dsn, "-q",
                                          "-k", "worker", timeout=240)
    result.assert_outcomes(passed=3)


def test_without_an_app_the_fixtures_say_how_to_name_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_it(chancy_memory):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    result.stdout.fnmatch_lines(["*Chancy's fixtures need your app: set `chancy_app = myproject.tasks:app`*"])


def test_a_project_not_using_it_loads_nothing(pytester: pytest.Pytester) -> None:
    """The plugin imports no Chancy machinery and starts no server unless a fixture asks."""
    pytester.makepyfile(
        "import sys\n"
        "def test_untouched():\n"
        "    assert 'chancy.testing' not in sys.modules and 'chancy.embedded' not in sys.modules\n"
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=1)
