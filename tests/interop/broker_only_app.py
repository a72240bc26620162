"""The stock Celery app of ``celery_app.py`` at the first step of a migration: only the
broker (``INTEROP_BROKER``) and result backend (``INTEROP_BACKEND``) URLs are given, as a
team would set them; each defaults to Chancy on ``INTEROP_DSN``."""

from __future__ import annotations

import os

from celery_app import DSN, make_app

app = make_app(DSN, broker_url=os.environ.get("INTEROP_BROKER") or "chancy+" + DSN,
               result_backend=os.environ.get("INTEROP_BACKEND") or "chancy+" + DSN)
