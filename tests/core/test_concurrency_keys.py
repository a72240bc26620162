"""Per-key concurrency at push: a task's key rule (an argument by name, or a function of
the arguments), a job's own key and limit, and bad input refused with a clear error
before anything is stored. (What the claim does with keys: tests/store/test_contract.py
``test_keyed_*``; across real workers: tests/cluster/test_keyed_concurrency.py.)"""

from __future__ import annotations

import pytest

from chancy import Job


async def stored(app) -> list[tuple]:
    async with app.store.connection() as conn:
        return await (await conn.execute(
            "SELECT args::text, concurrency_key, concurrency FROM chancy_jobs ORDER BY id")).fetchall()


async def test_a_task_names_each_jobs_key_from_an_argument_or_a_function(app):
    @app.task(concurrency_key="customer", concurrency=2)
    def by_name(order: int, customer: int | str = "walk-in") -> None: ...

    @app.task(concurrency_key=lambda order, **_: order["customer"])
    def by_function(order: dict, express: bool = False) -> None: ...

    await by_name.push(1, customer=42)
    await by_name.push(2, "acme")
    await by_name.push(3)  # the argument's default
    await by_function.push({"customer": "c-7"}, express=True)
    await by_name.push_many([(4, "bulk")])  # no COPY: a key per call
    assert [row[1:] for row in await stored(app)] == [
        ("42", 2), ("acme", 2), ("walk-in", 2), ("c-7", 1), ("bulk", 2)]


async def test_a_job_carries_its_own_key_and_limit(app):
    await app.push_many([Job("core_tasks.echo", args=[1], concurrency_key="cust-42", concurrency=3),
                         Job("core_tasks.echo", args=[2], concurrency_key="cust-43"),
                         Job("core_tasks.echo", args=[3])])
    assert [row[1:] for row in await stored(app)] == [("cust-42", 3), ("cust-43", 1), (None, None)]
    assert (await app.get_job((await app.push(Job("core_tasks.echo", concurrency_key="k"))).id)).concurrency == 1


@pytest.mark.parametrize("options,error,message", [
    ({"concurrency_key": "k", "concurrency": 0}, ValueError, "concurrency must be an integer from 1"),
    ({"concurrency_key": "k", "concurrency": 1.5}, ValueError, "concurrency must be an integer from 1"),
    ({"concurrency_key": "k", "concurrency": True}, ValueError, "concurrency must be an integer from 1"),
    ({"concurrency": 2}, TypeError, "give one"),
    ({"concurrency_key": 42}, TypeError, "concurrency_key must be a string, got int"),
    ({"concurrency_key": "a\x00b"}, ValueError, "NUL"),
])
def test_a_job_with_a_bad_key_or_limit_is_refused(options, error, message):
    with pytest.raises(error, match=message):
        Job("core_tasks.echo", **options)


def test_a_task_with_a_bad_rule_is_refused_when_declared(app):
    with pytest.raises(ValueError, match="'client' of task .* names no argument of it \\(it takes order, customer\\)"):
        @app.task(concurrency_key="client")
        def misnamed(order: int, customer: str) -> None: ...
    with pytest.raises(ValueError, match="concurrency must be an integer from 1"):
        @app.task(concurrency_key="customer", concurrency=0)
        def zero(customer: str) -> None: ...
    with pytest.raises(ValueError, match="give the key too"):
        @app.task(concurrency=2)
        def keyless(customer: str) -> None: ...
    with pytest.raises(TypeError, match="an argument name or a function"):
        @app.task(concurrency_key=3)  # type: ignore[arg-type]
        def numbered(customer: str) -> None: ...


async def test_a_key_that_cannot_be_made_fails_the_push_and_stores_nothing(app):
    @app.task(concurrency_key=lambda order: order["customer"])
    def raises(order: dict) -> None: ...

    @app.task(concurrency_key=lambda order: order)
    def not_a_string(order: object) -> None: ...

    @app.task(concurrency_key="customer")
    def by_name(customer: object) -> None: ...

    with pytest.raises(ValueError, match=r"concurrency_key function of task .*raises.* failed: KeyError: 'customer'"):
        await raises.push({"id": 1})
    with pytest.raises(TypeError, match=r"function of task .*not_a_string.* must return a string, got int"):
        await not_a_string.push(7)
    with pytest.raises(TypeError, match="argument 'customer' of task .* must be a string or an integer, got float"):
        by_name.push_sync(1.5)
    with pytest.raises(TypeError, match="missing a required argument: 'customer'"):
        await by_name.push()
    with pytest.raises(TypeError, match="must return a string"):
        await not_a_string.push_many([("ok",), (7,)])  # one bad call: none of the batch
    assert await stored(app) == []


def test_a_schedules_job_template_keeps_the_key_and_limit():
    """Cron fires copies of a stored template: a keyed job's copies are keyed too (and a
    template stored before keys existed still loads)."""
    from chancy.store.schedule_rules import dumps_job_template, loads_job_template

    template = loads_job_template(dumps_job_template(Job("core_tasks.echo", concurrency_key="nightly", concurrency=2)))
    assert (template.concurrency_key, template.concurrency) == ("nightly", 2)
    old = dumps_job_template(Job("core_tasks.echo")).replace(', "concurrency_key": null, "concurrency": null', "")
    assert "concurrency" not in old and loads_job_template(old).concurrency_key is None
