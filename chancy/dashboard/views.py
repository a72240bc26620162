"""Server-rendered HTML: the Jinja environment (autoescaping on, so job arguments,
results and tracebacks are always shown as text), display filters and chart geometry."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from chancy.dashboard.auth import Session

FRAGMENT_HEADER = "x-chancy-fragment"
#: Pages that answer a POST (a confirmation) and so cannot be fetched again to refresh.
STATIC_TEMPLATES = frozenset({"bulk.html"})


def safe_next(request: Request, target: str) -> str:
    """Where to go after a login or an action: a path inside this dashboard, else its home."""
    root = request.scope.get("root_path", "") or ""
    if target.startswith(root + "/") and not target.startswith("//") and "\\" not in target \
            and not target[len(root):].startswith("//"):
        return target
    return root + "/"


def age(seconds: float | None) -> str:
    """``3s``, ``4m 10s``, ``2h 5m``, ``3d 4h``."""
    if seconds is None:
        return "–"
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    if seconds < 1:
        return f"{sign}{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{sign}{seconds:.1f}s" if seconds < 10 else f"{sign}{seconds:.0f}s"
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if seconds >= size:
            return f"{sign}{int(seconds // size)}{unit} {int(seconds % size // sub_size)}{sub}"
    return f"{sign}{seconds:.0f}s"


def when(moment: datetime | None) -> str:
    if moment is None:
        return "–"
    if moment.year >= 9999:
        return "waiting on other jobs"
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=True)


def throughput_chart(points: list[dict[str, Any]], width: int = 720, height: int = 160) -> dict[str, Any]:
    """Stacked bars (succeeded below, failed above) per bucket, and a failure-rate line."""
    peak = max((p["succeeded"] + p["failed"] + p["other"] for p in points), default=0) or 1
    slot = width / max(1, len(points))
    bars, rate = [], []
    for i, p in enumerate(points):
        x = round(i * slot, 1)
        ok_h = p["succeeded"] / peak * height
        bad_h = p["failed"] / peak * height
        bars.append({"x": x, "w": round(max(1.0, slot - 1), 1), "ok_y": round(height - ok_h, 1),
                     "ok_h": round(ok_h, 1), "bad_y": round(height - ok_h - bad_h, 1), "bad_h": round(bad_h, 1),
                     "title": f"{datetime.fromtimestamp(p['at'], timezone.utc):%H:%M} — "
                              f"{p['succeeded']} succeeded, {p['failed']} failed"})
        done = p["succeeded"] + p["failed"]
        if done:
            rate.append(f"{x + slot / 2:.1f},{height - p['failed'] / done * height:.1f}")
    return {"width": width, "height": height, "peak": peak, "bars": bars, "rate": " ".join(rate)}


class Pages:
    def __init__(self, directory: Path, refresh_seconds: float) -> None:
        self.refresh_seconds = refresh_seconds
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(directory)), autoescape=True, undefined=jinja2.StrictUndefined,
            trim_blocks=True, lstrip_blocks=True,
        )
        self.env.filters.update(age=age, when=when, pretty=pretty)
        self.env.globals.update(throughput_chart=throughput_chart)

    def render(self, request: Request, session: Session | None, template: str, data: dict[str, Any],
               status: int = 200) -> HTMLResponse:
        notices = []
        fragment = request.headers.get(FRAGMENT_HEADER) == "1"
        if session is not None and not fragment:
            notices, session.notices[:] = list(session.notices), []
        html = self.env.get_template(template).render(
            data=data, root=request.scope.get("root_path", "") or "", session=session,
            user=session.user if session else None, notices=notices, fragment=fragment,
            refresh=self.refresh_seconds, path=request.url.path,
            template_refreshes=template not in STATIC_TEMPLATES,
            current=request.url.path + ("?" + request.url.query if request.url.query else ""),
            error=data.get("error"),
        )
        return HTMLResponse(html, status_code=status)
