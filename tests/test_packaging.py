"""What a user gets from ``pip install``: a wheel built from this tree holds every file the
code reads at run time (SQL statements, migrations, the dashboard's templates and static
files), not only the Python modules — an editable install, which the other tests use,
would never notice one missing."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_holds_every_file_the_package_ships(tmp_path: Path) -> None:
    tracked = subprocess.run(["git", "ls-files", "chancy"], cwd=ROOT, capture_output=True, text=True, check=True)
    data_files = {name for name in tracked.stdout.split() if not name.endswith(".py")}
    if not data_files:  # not a git checkout: list them from the tree
        data_files = {str(p.relative_to(ROOT)) for p in (ROOT / "chancy").rglob("*")
                      if p.is_file() and p.suffix not in (".py", ".pyc")}
    source = tmp_path / "source"  # a copy: building writes build/ and egg-info beside the sources
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    shutil.copytree(ROOT / "chancy", source / "chancy", ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = tmp_path.glob("chancy-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    assert {"chancy/store/pg/sql/jobs.sql", "chancy/store/pg/sql/migrations/0001_jobs_and_workers.sql"} <= data_files
    assert sorted(data_files - shipped) == []
