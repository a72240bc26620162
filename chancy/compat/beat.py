"""``beat_schedule`` / ``add_periodic_task`` run by the cluster's cron plugin: one process
of the app fires each tick exactly once, so no separate beat process is needed (``chancy
beat`` runs one for deployments that keep it) and there is no schedule file.

The schedules belong to the app's namespace: ``beat_schedule_namespace`` if set, else the
app's main name (``Celery("proj")`` → ``"proj"``), else ``"default"``; apps sharing a
database never fire or delete each other's. Entries are stored as schedules named
``celery:<entry name>``, and every sync writes the app's whole set: entries removed from
the configuration are unscheduled, all of them when none is left."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chancy.compat.canvas import Signature
from chancy.compat.job_rows import job_for
from chancy.compat.schedules import timing_of
from chancy.namespaces import DEFAULT_NAMESPACE, validate_namespace
from chancy.plugins.cron import Cron, Spec

if TYPE_CHECKING:
    from chancy.compat.app.base import Celery

PREFIX = "celery:"


def schedule_namespace(celery_app: "Celery") -> str:
    """The namespace of the app's schedules (see the module docstring)."""
    return validate_namespace(celery_app.conf.beat_schedule_namespace or celery_app.main
                              or DEFAULT_NAMESPACE)


def sync_schedule(celery_app: "Celery") -> list[str]:
    """Make the app's stored beat schedules exactly its ``beat_schedule`` (in one
    transaction); returns the schedule names."""
    chancy = celery_app.chancy
    timezone = celery_app.conf.timezone or "UTC"
    specs = [_spec(celery_app, entry_name, entry, timezone)
             for entry_name, entry in (celery_app.conf.beat_schedule or {}).items()]
    return Cron.replace_sync(chancy, specs, prefix=PREFIX)


def _spec(celery_app: "Celery", entry_name: str, entry: dict[str, Any], timezone: str) -> Spec:
    options = dict(entry.get("options") or {})
    expires = options.pop("expires", None)
    sig = Signature(entry["task"], entry.get("args") or (), entry.get("kwargs") or {}, options, app=celery_app)
    job = job_for(celery_app, sig)
    celery_meta = {k: v for k, v in job.meta["celery"].items() if k not in ("root_id",)}
    template = job.with_options(id=None, scheduled_at=None, expires_at=None, meta={**job.meta, "celery": celery_meta})
    return Spec(PREFIX + entry_name, template, timezone=timezone, expires_in=_seconds(expires),
                **timing_of(entry["schedule"]))


def _seconds(expires: Any) -> float | None:
    if expires is None:
        return None
    if isinstance(expires, (int, float)):
        return float(expires)
    raise TypeError(f"a periodic task's expires must be seconds, got {expires!r}")
