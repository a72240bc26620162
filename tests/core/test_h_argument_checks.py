"""``.delay()`` checks its arguments against the task's signature without binding them
when only positional arguments are given; it must accept and refuse exactly what binding
does (Celery's ``typing`` check), whatever the signature."""

from __future__ import annotations

import inspect

import pytest

from chancy.compat import Celery


def plain(a, b=2): ...
def star(a, *rest): ...
def keyword_required(a, *, k): ...
def keyword_optional(a, /, b, *, k=1, **kw): ...
def nothing(): ...
def only_kwargs(**kw): ...


class Bound:
    def method(self, a): ...


CALLS = [((), {}), ((1,), {}), ((1, 2), {}), ((1, 2, 3), {}), ((1,), {"k": 3}), ((), {"a": 1}),
         ((1,), {"a": 1}), ((), {"zz": 1})]


@pytest.mark.parametrize("func", [plain, star, keyword_required, keyword_optional, nothing, only_kwargs,
                                  Bound().method], ids=lambda f: f.__name__)
def test_argument_check_accepts_and_refuses_what_binding_does(func):
    app = Celery("h_checks", broker="postgresql://nowhere/db", set_as_current=False)
    task = app.task(name=f"h.{func.__name__}")(func)
    for args, kwargs in CALLS:
        try:
            inspect.signature(func).bind(*args, **kwargs)
            binds = True
        except TypeError:
            binds = False
        if binds:
            task.check_arguments(args, kwargs)
        else:
            with pytest.raises(TypeError, match=rf"h\.{func.__name__}\(\) called with wrong arguments"):
                task.check_arguments(args, kwargs)
