"""What a reader needs to rerun and trust a result: machine, versions, server settings."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import psutil
import psycopg

SETTINGS = ("server_version", "fsync", "synchronous_commit", "full_page_writes", "shared_buffers",
            "max_connections")
PACKAGES = ("chancy", "psycopg", "psycopg-binary", "psycopg-pool", "procrastinate", "pgqueuer", "celery", "kombu",
            "redis")


def _cpu_model() -> str:
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def _commit() -> str:
    repo = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "chancy", "benchmarks"], cwd=repo,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _redis_server() -> str | None:
    """The ``redis-server`` version the Celery peers run on, if installed."""
    try:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return next((word.split("=", 1)[1] for word in out.split() if word.startswith("v=")), out.strip())


def describe(dsn: str, server: str) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn:
        settings = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in SETTINGS}
    return {
        "chancy_commit": _commit(),
        "machine": {"cpu": _cpu_model(), "cores": os.cpu_count(),
                    "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
                    "os": platform.platform()},
        "python": platform.python_version(),
        "libpq": psycopg.pq.version(),
        "packages": {name: v for name in PACKAGES if (v := _version(name))},
        "redis_server": _redis_server(),
        "server": server,
        "postgres": settings,
        "load_average_at_start": os.getloadavg(),
    }


def summary(env: dict[str, Any]) -> str:
    pg = env["postgres"]
    packages = ", ".join(f"{k} {v}" for k, v in env["packages"].items())
    return (f"machine: {env['machine']['cpu']}, {env['machine']['cores']} cores, "
            f"{env['machine']['memory_gib']} GiB, {env['machine']['os']}\n"
            f"python {env['python']}, libpq {env['libpq']}, {packages}\n"
            f"postgres {pg['server_version']} ({env['server']}): fsync={pg['fsync']} "
            f"synchronous_commit={pg['synchronous_commit']} full_page_writes={pg['full_page_writes']} "
            f"shared_buffers={pg['shared_buffers']}\n"
            f"chancy commit {env['chancy_commit']}\n"
            f"load average at start: {', '.join(f'{x:.2f}' for x in env['load_average_at_start'])}"
            + ("  (WARNING: the machine is busy; figures will be noisy)"
               if env["load_average_at_start"][0] > 0.5 * (env["machine"]["cores"] or 1) else ""))
