"""The stock Celery app of ``celery_app.py`` with a chord header part that grows its own
chord (``Task.add_to_chord``), for the chord tests (``-A b_chord_app``)."""

from __future__ import annotations

from celery_app import app


@app.task(name="interop.b.grow", bind=True)
def grow(self, n):
    """A chord header part that adds ``add(n, n)`` to its own chord."""
    self.add_to_chord(app.signature("interop.add", args=(n, n)))
    return n

