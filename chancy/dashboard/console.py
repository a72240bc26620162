"""What the dashboard knows and does, independent of HTTP: each method returns JSON-ready
data (for the API and the templates alike) or performs one operator action.

Reading and writing go through the core's own operations (requeue, cancel, queue admin,
cron listing) where they exist, and through the store's operator statements otherwise
(``app.store.admin``, ``app.store.dashboard``)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from chancy.dashboard.filters import JobFilter
from chancy.dashboard.history import Counts, FinishedHistory
from chancy.job import LIVE_STATES, JobState
from chancy.plugins.cron import Cron
from chancy.store.schedule_rules import next_after as next_tick  # the one definition of a schedule's ticks
from chancy.plugins.leadership import current_leader
from chancy.plugins.queues import QueueAdmin
from chancy.store.admin import BulkAction, JobSelection
from chancy.store.pg.admin import in_sequence
from chancy.store.pg.statements import Steps

if TYPE_CHECKING:
    from chancy.app import Chancy

#: The window of the overview's charts and finished-job counts.
OVERVIEW_SPAN = 3600.0
OVERVIEW_BUCKET = 60.0
#: How many coming firings the schedules page lists per schedule.
UPCOMING_FIRINGS = 3


class NotFound(LookupError):
    """No such job (or queue)."""


class Conflict(ValueError):
    """The job's state does not allow that action."""


class Console:
    def __init__(self, app: "Chancy", history_lag: float = 5.0) -> None:
        self.app = app
        self.sql = app.store.dashboard
        self.admin = app.store.admin
        self.queue_admin = QueueAdmin(app)
        self.history = FinishedHistory(OVERVIEW_SPAN, OVERVIEW_BUCKET, history_lag)

    async def _run(self, *operations: Steps) -> list[Any]:
        """The results of ``operations``, run one after the other on one connection."""
        return await self.app.store.run(in_sequence(*operations))

    # --- overview and queues ----------------------------------------------------------------
    async def _history(self, now: datetime) -> dict[float, Counts]:
        return await self.history.read(now, self.app.store.run, self.sql.finished_buckets)

    async def overview(self) -> dict[str, Any]:
        (live, oldest), now, workers = await self._run(self.admin.live_counts(), self.sql.now(), self.admin.workers())
        buckets = await self._history(now)
        finished = _by_queue(buckets)
        queues = await self.queues(live=(live, oldest), finished=finished, workers=workers)
        done = sum(n for q in finished.values() for n in q.values())
        failed = sum(q.get("failed", 0) for q in finished.values())
        return {
            "now": now,
            "span_seconds": OVERVIEW_SPAN,
            "finished": done,
            "failed": failed,
            "failure_rate": failed / done if done else 0.0,
            "throughput": _series(buckets, now.timestamp()),
            "queues": queues,
            "workers_alive": sum(1 for w in workers if w["alive"]),
            "leader": await current_leader(self.app),
        }

    async def queues(self, live: tuple | None = None, finished: dict | None = None,
                     workers: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """Every queue known from code, settings, workers or jobs, with its counts (the
        overview passes what it has already read)."""
        if live is None or finished is None or workers is None:
            live, now, workers = await self._run(self.admin.live_counts(), self.sql.now(), self.admin.workers())
            finished = _by_queue(await self._history(now))
        counts, oldest = live
        settings = {s.name: s for s in await self.queue_admin.list()}
        served: dict[str, int] = {}
        for worker in workers:
            if worker["alive"]:
                for name in worker["queues"]:
                    served[name] = served.get(name, 0) + 1
        names = sorted(set(self.app.queues) | set(settings) | set(counts) | set(finished) | set(served))
        rows = []
        for name in names:
            declared = self.app.queues.get(name)
            setting = settings.get(name)
            by_state = counts.get(name, {})
            rows.append({
                "name": name,
                "declared": declared is not None,
                "code_concurrency": declared.concurrency if declared else None,
                "concurrency": setting.concurrency if setting else None,
                "paused": bool(setting and setting.paused),
                "paused_until": setting.paused_until if setting else None,
                "rate_limit": setting.rate_limit if setting else None,
                "rate_period": setting.rate_period if setting else None,
                "workers": served.get(name, 0),
                **{state.value: by_state.get(state.value, 0) for state in LIVE_STATES},
                "succeeded_last_hour": finished.get(name, {}).get("succeeded", 0),
                "failed_last_hour": finished.get(name, {}).get("failed", 0),
                "oldest_waiting_seconds": oldest.get(name),
            })
        return rows

    async def pause(self, name: str, seconds: float | None) -> None:
        await self.queue_admin.pause(name, None if seconds is None else timedelta(seconds=seconds))

    async def resume(self, name: str) -> None:
        await self.queue_admin.resume(name)

    async def set_concurrency(self, name: str, concurrency: int | None) -> None:
        await self.queue_admin.set_concurrency(name, concurrency)

    async def set_rate_limit(self, name: str, limit: int | None, per: float) -> None:
        await self.queue_admin.set_rate_limit(name, limit, per)

    # --- jobs ------------------------------------------------------------------------------------
    async def jobs(self, query: JobFilter) -> dict[str, Any]:
        """One page of jobs, newest first, with cursors that stay valid as jobs arrive."""
        (rows,) = await self._run(self.sql.list_jobs(
            query.selection(), cursor=query.cursor, newer=query.newer, limit=query.limit + 1))
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        if query.newer:
            rows.reverse()
        has_older = more if not query.newer else query.cursor is not None
        has_newer = query.cursor is not None if not query.newer else more
        return {
            "jobs": rows,
            "older": _cursor(rows[-1]) if rows and has_older else None,
            "newer": _cursor(rows[0]) if rows and has_newer else None,
            "filter": query.as_params(),
        }

    async def job(self, job_id: uuid.UUID) -> dict[str, Any]:
        (job,) = await self._run(self.sql.job(job_id))
        if job is None:
            raise NotFound(f"There is no job {job_id}")
        job["timings"] = _timings(job)
        job["can_retry"] = job["state"] in {"failed", "cancelled", "expired"}
        job["can_cancel"] = JobState(job["state"]) in LIVE_STATES
        job["can_delete"] = job["state"] != "running"
        job["in_canvas"] = bool(job["meta"].get("canvas"))
        return job

    async def retry(self, job_id: uuid.UUID) -> None:
        if not await self.app.requeue(job_id):
            await self._refuse(job_id, "retried: only failed, cancelled or expired jobs can run again")

    async def cancel(self, job_id: uuid.UUID) -> None:
        if not await self.app.cancel(job_id):
            await self._refuse(job_id, "cancelled: it has already finished")

    async def delete(self, job_id: uuid.UUID) -> None:
        (outcome,) = await self._run(self.sql.delete(job_id))
        if outcome is None:
            raise NotFound(f"There is no job {job_id}")
        if not outcome[1]:
            raise Conflict(f"Job {job_id} is running: cancel it first, then delete it")

    async def bulk(self, action: BulkAction, selection: JobSelection, *, dry_run: bool, force: bool) -> int:
        """Apply ``action`` to the selected jobs in bounded batches (or, ``dry_run``,
        count those it would change); returns the count."""
        if dry_run:
            return await self.app.store.run(self.admin.bulk_count(action, selection, force))
        return await self.app.store.run(self.admin.bulk(action, selection, force))

    async def _refuse(self, job_id: uuid.UUID, why: str) -> None:
        (job,) = await self._run(self.sql.job(job_id))
        if job is None:
            raise NotFound(f"There is no job {job_id}")
        raise Conflict(f"Job {job_id} is {job['state']} and cannot be {why}")

    async def canvas(self, job_id: uuid.UUID) -> dict[str, Any]:
        """The steps of the chain/chord/group ``job_id`` belongs to, in running order."""
        (jobs,) = await self._run(self.sql.canvas(job_id))
        if not jobs:
            raise NotFound(f"There is no job {job_id}")
        depth = _depths(jobs)
        jobs.sort(key=lambda j: (depth[str(j["id"])], j["created_at"], str(j["id"])))
        steps: list[dict[str, Any]] = []
        for job in jobs:
            level = depth[str(job["id"])]
            if not steps or steps[-1]["step"] != level + 1:
                steps.append({"step": level + 1, "jobs": []})
            steps[-1]["jobs"].append(job)
        return {"job_id": job_id, "steps": steps, "count": len(jobs)}

    # --- workers and schedules -------------------------------------------------------------------
    async def workers(self) -> dict[str, Any]:
        (workers,) = await self._run(self.admin.workers())
        leader = await current_leader(self.app)
        for worker in workers:
            worker["leader"] = leader is not None and worker["worker_id"].startswith(leader)
        return {"workers": workers, "leader": leader}

    async def schedules(self) -> dict[str, Any]:
        (now,) = await self._run(self.sql.now())
        rows = []
        for s in await Cron.schedules(self.app):
            rows.append({
                "name": s.name, "task": s.job.func, "queue": s.job.queue, "cron": s.cron, "every": s.every,
                "timezone": s.timezone, "enabled": s.enabled, "next_fire_at": s.next_fire_at,
                "next_in_seconds": (s.next_fire_at - now).total_seconds(), "last_fired_at": s.last_fired_at,
                "upcoming": _upcoming(s.next_fire_at, s.cron, s.every, s.timezone),
            })
        rows.sort(key=lambda r: (not r["enabled"], r["next_fire_at"]))
        return {"schedules": rows, "now": now}


# --- shaping ---------------------------------------------------------------------------------
def _cursor(row: dict[str, Any]) -> str:
    return f"{row['created_at'].isoformat()}|{row['id']}"


def _by_queue(buckets: dict[float, Counts]) -> dict[str, dict[str, int]]:
    totals: dict[str, dict[str, int]] = {}
    for counts in buckets.values():
        for (queue, state), n in counts.items():
            by_state = totals.setdefault(queue, {})
            by_state[state] = by_state.get(state, 0) + n
    return totals


def _series(buckets: dict[float, Counts], now: float) -> list[dict[str, Any]]:
    """One point per minute of the last hour (empty minutes as zeros), oldest first."""
    first = (now - OVERVIEW_SPAN) // OVERVIEW_BUCKET * OVERVIEW_BUCKET + OVERVIEW_BUCKET
    points = []
    for i in range(int(OVERVIEW_SPAN // OVERVIEW_BUCKET)):
        at = first + i * OVERVIEW_BUCKET
        point = {"at": at, "succeeded": 0, "failed": 0, "other": 0}
        for (_, state), n in buckets.get(at, {}).items():
            point[state if state in ("succeeded", "failed") else "other"] += n
        points.append(point)
    return points


def _upcoming(first: datetime, cron: str | None, every: float | None, timezone: str) -> list[datetime]:
    """The next ``UPCOMING_FIRINGS`` ticks of a schedule, by the cron plugin's own rule."""
    ticks = [first]
    while len(ticks) < UPCOMING_FIRINGS:
        ticks.append(next_tick(ticks[-1], cron=cron, every=every, timezone=timezone))
    return ticks


def _timings(job: dict[str, Any]) -> dict[str, float | None]:
    def between(start: datetime | None, end: datetime | None) -> float | None:
        return (end - start).total_seconds() if start and end else None

    running_until = job["completed_at"] or (job["now"] if job["state"] == "running" else None)
    return {
        "waited_seconds": between(job["scheduled_at"], job["started_at"]),
        "ran_seconds": between(job["started_at"], running_until),
        "total_seconds": between(job["created_at"], job["completed_at"]),
    }


def _depths(jobs: list[dict[str, Any]]) -> dict[str, int]:
    """Each job's step: 0 for jobs that wait on nothing, else one past its latest wait."""
    after = {str(j["id"]): [str(a) for a in _listed(j["canvas"].get("after"))] for j in jobs}
    depth: dict[str, int] = {}

    def of(job_id: str, seen: frozenset[str]) -> int:
        if job_id not in depth:
            parents = [p for p in after.get(job_id, []) if p in after and p not in seen]
            depth[job_id] = 1 + max((of(p, seen | {job_id}) for p in parents), default=-1)
        return depth[job_id]

    for job_id in after:
        of(job_id, frozenset())
    return depth


def _listed(value: Any) -> list[Any]:
    """A stored list, or nothing: meta holds whatever its pusher wrote."""
    return value if isinstance(value, list) else []
