"""Tasks whose outcomes Postgres' jsonb would refuse, for the poison tests. Module-level
so that every executor (process children included) can run them."""

from __future__ import annotations


def returns(kind: str):
    return {
        "nan": float("nan"),
        "infinity": float("inf"),
        "nul": "a\x00b",
        "surrogate": "\ud800",
        "nested_nan": {"scores": [1.0, float("-inf")]},
    }[kind]


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


def raises(kind: str):
    if kind == "unprintable":
        raise Unprintable()
    raise ValueError({"nul": "bad\x00message", "surrogate": "bad\udc80message"}[kind])


def ok(value):
    return value
