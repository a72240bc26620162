"""`chancy`'s public names load lazily; its `__all__` is spelled out for linters and type
checkers, so it must stay the same list as the table the lazy loader reads."""

import importlib

import chancy


def test_all_lists_exactly_the_lazily_loaded_names():
    assert chancy.__all__ == sorted(chancy._HOMES)


def test_each_public_name_is_its_home_modules_object():
    for name, home in chancy._HOMES.items():
        assert getattr(chancy, name) is getattr(importlib.import_module(home), name)
