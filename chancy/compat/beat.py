"""``beat_schedule`` / ``add_periodic_task`` run by the cluster's cron plugin: the
leader fires each tick exactly once, so no separate beat process is needed (``chancy
beat`` runs one for deployments that keep it) and there is no schedule file. Entries are stored as schedules named ``celery:<entry name>``; entries
removed from the configuration are unscheduled when the schedule is synced again."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chancy.compat.schedules import timing_of
from chancy.plugins.cron import Cron

if TYPE_CHECKING:
    from chancy.compat.app.base import Celery

PREFIX = "celery:"


def sync_schedule(celery_app: "Celery") -> list[str]:
    """Write the app's beat schedule to the database; returns the schedule names."""
    from chancy.compat.canvas import Signature

    chancy = celery_app.chancy
    timezone = celery_app.conf.timezone or "UTC"
    wanted = []
    for entry_name, entry in (celery_app.conf.beat_schedule or {}).items():
        options = dict(entry.get("options") or {})
        expires = options.pop("expires", None)
        sig = Signature(entry["task"], entry.get("args") or (), entry.get("kwargs") or {}, options, app=celery_app)
        job = celery_app.job_for(sig)
        celery_meta = {k: v for k, v in job.meta["celery"].items() if k not in ("root_id",)}
        template = job.with_options(id=None, scheduled_at=None, expires_at=None,
                                    meta={**job.meta, "celery": celery_meta})
        name = PREFIX + entry_name
        Cron.schedule_sync(chancy, name, template, timezone=timezone, expires_in=_seconds(expires),
                           **timing_of(entry["schedule"]))
        wanted.append(name)
    for existing in Cron.schedules_sync(chancy):
        if existing.name.startswith(PREFIX) and existing.name not in wanted:
            Cron.unschedule_sync(chancy, existing.name)
    return wanted


def _seconds(expires: Any) -> float | None:
    if expires is None:
        return None
    if isinstance(expires, (int, float)):
        return float(expires)
    raise TypeError(f"a periodic task's expires must be seconds, got {expires!r}")
