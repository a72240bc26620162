"""Project B (``chancy worker -A appB``): a ``tick`` entry named like project A's."""

from project import make_project

app = make_project("appB", nightly=False)
