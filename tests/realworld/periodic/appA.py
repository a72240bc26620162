"""Project A (``chancy worker -A appA``): a ``tick`` and a ``nightly`` entry."""

from project import make_project

app = make_project("appA", nightly=True)
