#!/usr/bin/env python3
"""Run Celery's own integration tests (t/integration) against Chancy's broker and result
backend, beside the same tests on Redis, and report the difference (issue 25).

    .venv/bin/python external/celery_suite/run.py            # what .ci/celery-suite runs
    .venv/bin/python external/celery_suite/run.py --files test_inspect.py --targets chancy

Steps: the INSTALLED Celery version's source distribution is fetched from the package
index (``pip download --no-binary :all:``) into a temporary folder and only its ``t/``
folder unpacked (nothing is vendored into this tree); the test plugins the suite needs are
installed if missing; a throwaway Postgres (``chancy.embedded``) is started and migrated,
and a throwaway ``redis-server`` on a random loopback port where one is installed; then
each test file runs as its own pytest process, per target, with a per-test and a per-file
time limit, and ``overlay.py`` records every outcome as it happens. The report (Markdown)
goes to ``--report`` and to stdout, the raw outcomes to ``--json``.

Exit status: 0 whenever a report was written, whatever the tests did; non-zero only when
the script itself could not run (no sdist, no Postgres, a crash).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import importlib.metadata
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_FILES = ("test_tasks.py", "test_canvas.py", "test_inspect.py")
# `result_backend.startswith('redis')` and `…startswith(('redis', 'rpc'))`: the suite's gates.
REDIS_GATE = re.compile(r"""result_backend\.startswith\(\(?(['"])redis\1[^)]*\)\)?""")


def open_gate(match: re.Match) -> str:
    """The same gate, letting a ``chancy+`` backend through too (for the probe)."""
    names = re.findall(r"""['"]([^'"]+)['"]""", match.group(0))
    return "result_backend.startswith((" + ", ".join(repr(n) for n in [*names, "chancy"]) + "))"

STATUSES = ("passed", "failed", "error", "skipped", "timeout", "not run")
BAD = ("failed", "error", "skipped", "timeout", "not run")


DEADLINE = float("inf")  # time.monotonic() past which no file starts or keeps running
LIVE: set[subprocess.Popen] = set()  # the pytest processes running now
STOPPING = False  # set by SIGTERM/SIGINT: stop the runs, still write the report


def _on_signal(signum, frame) -> None:
    global STOPPING
    STOPPING = True
    log(f"signal {signum}: stopping the runs, then writing the report")
    for proc in list(LIVE):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def log(msg: str) -> None:
    print(f"[celery-suite {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# Outcomes: folding overlay.py's records into one status per test (pure, unit-tested)
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class FileRun:
    """One test file on one target."""

    target: str
    file: str
    statuses: dict[str, str]  # nodeid -> one of STATUSES
    reasons: dict[str, str]  # nodeid -> one-line reason (failures, errors, skips, timeouts)
    seconds: float = 0.0
    note: str = ""  # e.g. "file timeout after 900 s", "pytest exit 4"

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
        for status in self.statuses.values():
            out[status] += 1
        return out


def fold_records(lines: Iterable[str], *, killed: bool = False) -> tuple[dict[str, str], dict[str, str]]:
    """Fold overlay.py's JSON lines into (status per test, reason per test).

    A rerun starts the test afresh; a setup failure is an error; a teardown failure after a
    passed call makes it an error; a test that started but never reported, in a run that
    was killed, is a timeout; collected tests never started are "not run"."""
    statuses: dict[str, str] = {}
    reasons: dict[str, str] = {}
    collected: list[str] = []
    started: list[str] = []
    subtests: dict[str, list[str]] = {}
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
        event = rec.get("event")
        if event == "collected":
            collected.extend(n for n in rec["nodeids"] if n not in collected)
        elif event == "start":
            started.append(rec["nodeid"])
        elif event == "subtest":
            subtests.setdefault(rec["nodeid"], []).append(rec.get("reason", ""))
        elif event == "report":
            node, when, outcome = rec["nodeid"], rec["when"], rec["outcome"]
            if outcome == "rerun":
                statuses.pop(node, None)
                reasons[node] = rec.get("reason", "")
                continue
            if rec.get("xfail"):
                outcome = "skipped" if outcome == "skipped" else "passed"
            if when == "teardown":
                if outcome == "error" and statuses.get(node) == "passed":
                    statuses[node], reasons[node] = "error", "teardown: " + rec.get("reason", "")
                continue
            if outcome == "failed" and "Timeout" in rec.get("reason", "") and "pytest-timeout" in rec.get("reason", ""):
                outcome = "timeout"
            statuses[node] = outcome
            if outcome == "passed":
                reasons.pop(node, None)
            else:
                reasons[node] = rec.get("reason", "")
    for node, failures in subtests.items():
        if statuses.get(node) == "failed" and failures:
            more = f" (+{len(failures) - 1} more)" if len(failures) > 1 else ""
            reasons[node] = f"{reasons.get(node, '')}: first: {failures[0]}{more}".lstrip(": ")
    for node in started:
        if node not in statuses:
            statuses[node] = "timeout" if killed else "error"
            reasons[node] = ("killed by the file time limit while running" if killed
                             else "started but never reported (pytest crashed?)")
    for node in collected:
        if node not in statuses:
            statuses[node] = "not run"
            reasons[node] = "not reached (file time limit)" if killed else "not reached"
    return statuses, reasons


def test_name(nodeid: str) -> str:
    """``t/integration/test_canvas.py::test_chord::test_x[a]`` -> ``test_chord::test_x[a]``."""
    return nodeid.split("::", 1)[1] if "::" in nodeid else nodeid


def render_report(runs: list[FileRun], *, celery_version: str, targets: list[str],
                  files: list[str], timings: dict[str, float], notes: list[str],
                  gated: dict[str, dict[str, bool]] | None = None) -> str:
    """The Markdown report: a table per file, then what passes on Redis but not on Chancy."""
    by = {(r.target, r.file): r for r in runs}
    out = [f"# Celery {celery_version} integration suite: Chancy vs Redis", ""]
    out += [f"- {n}" for n in notes]
    if notes:
        out.append("")
    header = "| file | " + " | ".join(
        f"{t}: pass / fail / error / skip / timeout / not run" for t in targets) + " |"
    out += [header, "|" + "---|" * (1 + len(targets))]
    for f in files:
        cells = []
        for t in targets:
            run = by.get((t, f))
            if run is None:
                cells.append("—")
                continue
            c = run.counts()
            total = len(run.statuses)
            cell = (f"**{c['passed']}**/{total} · {c['failed']} · {c['error']} · {c['skipped']} · "
                    f"{c['timeout']} · {c['not run']}")
            cells.append(cell + (f" ({run.note})" if run.note else ""))
        out.append(f"| {f} | " + " | ".join(cells) + " |")
    out.append("")
    if timings:
        out.append("Time per run: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in sorted(timings.items())))
        out.append("")
    if "redis" in targets and "chancy" in targets:
        for f in files:
            red, chy = by.get(("redis", f)), by.get(("chancy", f))
            if red is None or chy is None:
                continue
            worse = [n for n, s in red.statuses.items() if s == "passed" and chy.statuses.get(n, "not run") != "passed"]
            out.append(f"## {f}: {len(worse)} pass on Redis and not on Chancy")
            out.append("")
            for n in sorted(worse):
                s = chy.statuses.get(n, "not run")
                out.append(f"- `{test_name(n)}` — **{s}**: {chy.reasons.get(n, '') or '(no reason recorded)'}")
            out.append("")
            better = [n for n, s in chy.statuses.items() if s == "passed" and red.statuses.get(n) != "passed"]
            if better:
                out.append(f"Pass on Chancy and not on Redis: " + ", ".join(f"`{test_name(n)}`" for n in sorted(better)))
                out.append("")
    for f in files:
        names = (gated or {}).get(f) or {}
        if not names:
            continue
        red, chy, probe = by.get(("redis", f)), by.get(("chancy", f)), by.get(("chancy-probe", f))
        out.append(f"## {f}: {len(names)} tests gated on a Redis result backend")
        out.append("")
        out.append("side channel = the test itself reads or writes Redis (redis_echo, redis_count, "
                   "get_redis_connection…); chancy-probe = Chancy broker and backend, gate opened, "
                   "Redis there only as that side channel.")
        out.append("")
        out.append("| test | side channel | redis | chancy | chancy-probe | probe reason |")
        out.append("|---|---|---|---|---|---|")
        for name, side in sorted(names.items()):
            def status(run):
                if run is None:
                    return "—"
                hits = [n for n in run.statuses if test_name(n) == name or test_name(n).startswith(name + "[")]
                return ", ".join(sorted({run.statuses[n] for n in hits})) or "—"
            reason = ""
            if probe is not None:
                hits = [n for n in probe.statuses if probe.statuses[n] != "passed"
                        and (test_name(n) == name or test_name(n).startswith(name + "["))]
                reason = probe.reasons.get(hits[0], "") if hits else ""
            out.append(f"| `{name}` | {'yes' if side else 'no'} | {status(red)} | {status(chy)} | "
                       f"{status(probe)} | {reason.replace('|', '/')} |")
        out.append("")
    for t in targets:
        both = []
        for f in files:
            run = by.get((t, f))
            if run is None:
                continue
            other = [by.get((o, f)) for o in targets if o != t]
            for n, s in run.statuses.items():
                if s in ("failed", "error", "timeout") and all(o is None or o.statuses.get(n) != "passed" for o in other):
                    both.append(f"- `{n}` — {s}: {run.reasons.get(n, '')}")
        if both and len(targets) > 1:
            out.append(f"## Failing on {t} and not passing elsewhere either")
            out += ["", *both, ""]
    return "\n".join(out).rstrip() + "\n"


# ---------------------------------------------------------------------------------------
# Setting up: the sdist, the plugins, the services
# ---------------------------------------------------------------------------------------


def installed_version(dist: str) -> str:
    return importlib.metadata.version(dist)


def pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    log(" ".join(cmd))
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)


def fetch_tests(version: str, workdir: Path) -> Path:
    """Download Celery's sdist and unpack only its ``t/`` folder (plus the requirements
    files that say which test plugins it wants); returns the unpacked root."""
    dl = workdir / "sdist"
    dl.mkdir(parents=True, exist_ok=True)
    pip("download", f"celery=={version}", "--no-deps", "--no-binary", ":all:", "-d", str(dl), "-q")
    archives = sorted(dl.glob("celery-*.tar.gz"))
    if not archives:
        raise SystemExit(f"pip download gave no celery-{version} source archive in {dl}")
    root = workdir / "src"
    with tarfile.open(archives[0]) as tar:
        top = f"celery-{version}/"
        members = [m for m in tar.getmembers()
                   if m.name.startswith(top + "t/") or m.name.startswith(top + "requirements/")
                   or m.name == top + "pyproject.toml"]
        tar.extractall(workdir, members=members, filter="data")
    (workdir / f"celery-{version}").rename(root)
    return root


def pinned(requirements: Path, name: str) -> str | None:
    """``name==1.2`` (or whatever spec) as the sdist's requirements file pins it."""
    if not requirements.exists():
        return None
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if re.match(rf"^{re.escape(name)}\s*([=<>!~\[]|$)", line, re.I):
            return line
    return None


def ensure_plugins(src: Path, version: str) -> None:
    """Install what t/integration imports and the plugins its markers need, if missing:
    redis and pydantic (via Celery's own extras, so their pins match), pytest-timeout and
    pytest-rerunfailures (at the sdist's pins). pytest-celery is not needed: the fixtures
    come from ``celery.contrib.pytest``, loaded with ``-p``."""
    wanted = []
    for module, spec in (("redis", None), ("pydantic", None)):
        try:
            __import__(module)
        except ImportError:
            wanted.append(f"celery[redis,pydantic]=={version}")
            break
    test_reqs = src / "requirements" / "test.txt"
    for module, dist in (("pytest_timeout", "pytest-timeout"), ("pytest_rerunfailures", "pytest-rerunfailures")):
        try:
            __import__(module)
        except ImportError:
            wanted.append(pinned(test_reqs, dist) or dist)
    if wanted:
        pip("install", "-q", *wanted)


def write_ini(src: Path) -> Path:
    """A pytest.ini with the sdist's markers and options (its pyproject points testpaths at
    t/unit); ``-c`` makes src the rootdir, so ``import t.integration`` works and ``import
    celery`` still finds the installed Celery (only t/ was unpacked)."""
    markers = ["flaky", "timeout", "amqp"]
    pyproject = src / "pyproject.toml"
    if pyproject.exists():
        m = re.search(r"^markers\s*=\s*\[(.*?)\]", pyproject.read_text(), re.M | re.S)
        if m:
            markers = sorted(set(markers) | set(re.findall(r'"([^"]+)"', m.group(1))))
    ini = src / "pytest.ini"
    ini.write_text("[pytest]\naddopts = --strict-markers\npython_classes = test_*\n"
                   "markers =\n" + "".join(f"    {m}\n" for m in markers))
    return ini


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_executable() -> str | None:
    return shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)


@contextlib.contextmanager
def redis_server(data: Path) -> Iterator[str | None]:
    """A throwaway redis-server on a random loopback port, its files in ``data``: yields
    its port, or None if there is no redis-server on this machine."""
    exe = redis_executable()
    if exe is None:
        yield None
        return
    port = free_port()
    data.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(data), "--databases", "16", "--protected-mode", "yes"],
        stdin=subprocess.DEVNULL, stdout=(data / "redis.log").open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {(data / 'redis.log').read_text()[-2000:]}")
            time.sleep(0.1)
        log(f"redis-server pid {proc.pid} on 127.0.0.1:{port}")
        yield str(port)
    finally:
        stop_group(proc)


def migrate(dsn: str) -> None:
    chancy = shutil.which("chancy", path=str(Path(sys.executable).parent)) or "chancy"
    subprocess.run([chancy, "migrate", "--dsn", dsn], check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def tree_state() -> str:
    """The commit of the Chancy that runs (and whether its tree has local changes)."""
    import chancy

    root = Path(chancy.__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "chancy"],
                               capture_output=True, text=True).stdout.strip()
        return f"chancy at {head}" + (" with local changes under chancy/" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return f"chancy {installed_version('chancy')}"


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, the process group of ``proc`` (it was started in its own session)."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # pool children left behind in the group


# ---------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class Target:
    name: str
    env: dict[str, str]
    src: Path  # the unpacked sdist this target runs (the probe has its own patched copy)
    extra_args: list[str] = dataclasses.field(default_factory=list)
    select: dict[str, list[str]] | None = None  # file -> "Class::test" to run (None: all)
    migrate_dsn: str | None = None  # `chancy migrate` before each file (the installed code may move on)


def run_file(target: Target, file: str, args: argparse.Namespace, outdir: Path) -> FileRun:
    results = outdir / f"{target.name}-{file}.jsonl"
    results.unlink(missing_ok=True)
    logfile = outdir / f"{target.name}-{file}.log"
    env = {
        **os.environ, **target.env,
        "PYTHONPATH": os.pathsep.join([str(HERE), str(target.src)]),
        "CELERY_SUITE_RESULTS": str(results),
        "CELERY_SUITE_TEST_TIMEOUT": str(args.test_timeout),
        "CELERY_SUITE_RERUNS": str(args.reruns if target.name == "redis" else args.reruns_chancy),
        "PYTHONUNBUFFERED": "1",
    }
    cmd = [sys.executable, "-m", "pytest", "-c", str(target.src / "pytest.ini"), "--rootdir", str(target.src),
           "-p", "celery.contrib.pytest", "-p", "overlay", "-p", "no:cacheprovider",
           f"--timeout={args.test_timeout}", "-q", "-rN", "--no-header",
           *target.extra_args, *(["-k", args.k] if args.k else []),
           *([f"t/integration/{file}"] if target.select is None
             else [f"t/integration/{file}::{name}" for name in target.select.get(file, [])])]
    limit = min(args.file_timeout, DEADLINE - time.monotonic())
    if limit < 30 or STOPPING:
        log(f"{target.name}: {file}: not started (suite time limit)")
        return FileRun(target.name, file, {}, {}, 0.0, "not started: suite time limit")
    if target.migrate_dsn:
        migrate(target.migrate_dsn)
    log(f"{target.name}: {file} (log {logfile}, limit {limit:.0f} s)")
    started = time.monotonic()
    with logfile.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=target.src, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        LIVE.add(proc)
        killed = False
        try:
            code = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            killed, code = True, None
        finally:
            stop_group(proc)
            LIVE.discard(proc)
    seconds = time.monotonic() - started
    lines = results.read_text().splitlines() if results.exists() else []
    killed = killed or STOPPING
    statuses, reasons = fold_records(lines, killed=killed)
    note = f"killed at the time limit, {limit:.0f} s" if killed else (
        "" if code in (0, 1) else f"pytest exit {code}")
    if not statuses:
        tail = logfile.read_text(errors="replace")[-1500:] if logfile.exists() else ""
        note = (note + "; " if note else "") + "nothing collected"
        log(f"{target.name}: {file}: nothing collected; log tail:\n{tail}")
    run = FileRun(target.name, file, statuses, reasons, seconds, note)
    c = run.counts()
    log(f"{target.name}: {file}: {c['passed']}/{len(statuses)} passed, {c['failed']} failed, "
        f"{c['error']} errors, {c['skipped']} skipped, {c['timeout']} timeouts in {seconds:.0f} s {note}")
    return run


def probe_copy(src: Path, workdir: Path) -> Path:
    """A copy of the suite whose "Requires redis result backend" checks also let a
    ``chancy+`` backend through (Redis stays there as the tests' side channel), so that the
    probe target shows which gated tests Chancy's backend would pass."""
    dst = workdir / "src-probe"
    shutil.copytree(src, dst)
    for path in (dst / "t" / "integration").glob("test_*.py"):
        text = path.read_text()
        new = REDIS_GATE.sub(open_gate, text)
        if new != text:
            path.write_text(new)
    return dst


REDIS_SIDE_CHANNEL = re.compile(
    r"get_redis_connection|get_active_redis_channels|await_redis_\w+|\bredis_(?:echo|count)\w*|redis_connection")


def gated_in_source(text: str) -> dict[str, bool]:
    """The tests (``Class::test``) that the "Requires redis result backend" gate skips
    when the backend is not Redis, each with whether its code (or its class's fixtures)
    talks to Redis itself as a side channel (``redis_echo``, ``get_redis_connection``…).
    A gate in a class's non-test method (a fixture) gates every test of the class."""
    import ast

    tree = ast.parse(text)
    out: dict[str, bool] = {}

    def tests_of(body):
        return [n for n in body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name.startswith("test")]

    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            helpers = "".join(ast.get_source_segment(text, n) or "" for n in node.body
                              if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and not n.name.startswith("test"))
            class_gated = bool(REDIS_GATE.search(helpers))
            for fn in tests_of(node.body):
                code = ast.get_source_segment(text, fn) or ""
                if class_gated or REDIS_GATE.search(code):
                    out[f"{node.name}::{fn.name}"] = bool(REDIS_SIDE_CHANNEL.search(code + helpers))
    for fn in tests_of(tree.body):
        code = ast.get_source_segment(text, fn) or ""
        if REDIS_GATE.search(code):
            out[fn.name] = bool(REDIS_SIDE_CHANNEL.search(code))
    return out


def gated_tests(src: Path, files: Iterable[str]) -> dict[str, dict[str, bool]]:
    return {f: gated_in_source((src / "t" / "integration" / f).read_text()) for f in files}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", default=",".join(DEFAULT_FILES), help="comma-separated t/integration files")
    p.add_argument("--targets", default="redis,chancy",
                   help="comma-separated: redis, chancy, chancy-probe (Chancy with the Redis-backend "
                        "gates opened and Redis as the side channel; runs only the gated tests)")
    p.add_argument("--test-timeout", type=int, default=90,
                   help="per-test limit, seconds (caps the suite's 300; above test_canvas's 60 s get())")
    p.add_argument("--reruns", type=int, default=1,
                   help="cap on the suite's @flaky reruns (it asks for 5) on Redis, the reference")
    p.add_argument("--reruns-chancy", type=int, default=0,
                   help="the same cap on Chancy: a failure there is worth seeing, and a rerun of a "
                        "test that waits out a 60 s get() doubles its cost")
    p.add_argument("--file-timeout", type=int, default=1500, help="per-file, per-target limit, seconds")
    p.add_argument("--total-timeout", type=int, default=2100,
                   help="whole-run limit, seconds, from the start of the first file: running files are "
                        "stopped then and the report is still written")
    p.add_argument("--jobs", type=int, default=4,
                   help="(target, file) runs side by side, each with its own redis-server and database")
    p.add_argument("-k", default="", help="pytest -k expression, for trying a few tests")
    p.add_argument("--celery-version", default="", help="default: the installed Celery")
    p.add_argument("--workdir", default="", help="default: a temporary folder, removed afterwards")
    p.add_argument("--report", default=str(HERE / "last-report.md"))
    p.add_argument("--json", default=str(HERE / "last-report.json"))
    p.add_argument("--no-install", action="store_true", help="do not pip install missing test plugins")
    args = p.parse_args(argv)

    files = [f.strip() for f in args.files.split(",") if f.strip()]
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    version = args.celery_version or installed_version("celery")
    notes = [f"celery {version}, kombu {installed_version('kombu')}, python {sys.version.split()[0]}, "
             f"{tree_state()}; "
             f"per-test limit {args.test_timeout} s, @flaky reruns capped at {args.reruns} (Redis) / "
             f"{args.reruns_chancy} (Chancy), "
             f"file limit {args.file_timeout} s, whole-run limit {args.total_timeout} s"]

    with contextlib.ExitStack() as stack:
        if args.workdir:
            workdir = Path(args.workdir).resolve()
            shutil.rmtree(workdir, ignore_errors=True)
            workdir.mkdir(parents=True)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="celery-suite-")))
        src = fetch_tests(version, workdir)
        if not args.no_install:
            ensure_plugins(src, version)
        write_ini(src)
        outdir = workdir / "out"
        outdir.mkdir()

        # Every (target, file) pair is one job with services of its own (a redis-server, a
        # database), so jobs can run side by side without one session worker taking another's
        # tasks or pidbox messages; the longest files start first.
        have_redis = redis_executable() is not None
        chancy_targets = [t for t in targets if t in ("chancy", "chancy-probe")]
        server = None
        if chancy_targets:
            from chancy.embedded import start_throwaway_server

            server = stack.enter_context(start_throwaway_server())
            log(f"throwaway Postgres: {server.admin_dsn}")
        specs: dict[str, Target] = {}
        if "redis" in targets:
            if have_redis:
                specs["redis"] = Target("redis", {}, src)
            else:
                notes.append("redis: skipped, no redis-server on this machine")
        if "chancy" in targets:
            # Broker and backend are Chancy's; Redis, where there is one, is there only as
            # the side channel some ungated tests write to (redis_echo…), as upstream's CI has it.
            specs["chancy"] = Target("chancy", {}, src, ["-p", "chancy.compat.kombu"])
        if "chancy-probe" in targets:
            if have_redis:
                gated = gated_tests(src, files)
                specs["chancy-probe"] = Target("chancy-probe", {}, probe_copy(src, workdir), ["-p", "chancy.compat.kombu"],
                                               select={f: list(names) for f, names in gated.items()})
                notes.append("chancy-probe: Chancy broker and backend with the suite's \"Requires redis "
                             "result backend\" gates opened and Redis only as the tests' side channel")
            else:
                notes.append("chancy-probe: skipped, no redis-server for the side channel")

        global DEADLINE
        DEADLINE = time.monotonic() + args.total_timeout
        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)

        def run_job(spec: Target, file: str) -> FileRun:
            with contextlib.ExitStack() as services:
                port = services.enter_context(redis_server(workdir / f"redis-{spec.name}-{file}")) if have_redis else None
                side = {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": port or "1"}
                if spec.name == "redis":
                    url = f"redis://127.0.0.1:{port}"
                    env, dsn = {"TEST_BROKER": f"{url}/0", "TEST_BACKEND": f"{url}/1", **side}, None
                else:
                    from chancy.embedded import create_database

                    dsn = create_database(server.admin_dsn, re.sub(r"\W", "_", f"cs_{spec.name}_{file}"))
                    env = {"TEST_BROKER": f"chancy+{dsn}", "TEST_BACKEND": f"chancy+{dsn}", **side}
                job = dataclasses.replace(spec, env=env, migrate_dsn=dsn)
                return run_file(job, file, args, outdir)

        def weight(file: str) -> int:
            return {"test_canvas.py": 0, "test_tasks.py": 1}.get(file, 2)

        jobs = [(spec, f) for f in sorted(files, key=weight) for spec in specs.values()
                if spec.select is None or spec.select.get(f)]
        runs: list[FileRun] = []
        timings: dict[str, float] = {}
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = {pool.submit(run_job, spec, f): (spec.name, f) for spec, f in jobs}
            for fut in concurrent.futures.as_completed(futures):
                run = fut.result()
                runs.append(run)
                timings[f"{run.target} {run.file}"] = run.seconds
        notes.append(f"wall time of the runs: {(time.monotonic() - t0) / 60:.1f} min, {args.jobs} jobs side by side")
        runnable = list(specs.values())

        names = [t.name for t in runnable]
        report = render_report(runs, celery_version=version, targets=names, files=files,
                               timings=timings, notes=notes, gated=gated_tests(src, files))
        Path(args.report).write_text(report)
        Path(args.json).write_text(json.dumps({
            "celery": version, "notes": notes, "timings": timings,
            "runs": [dataclasses.asdict(r) for r in runs],
        }, indent=1))
        if args.workdir:
            log(f"logs kept in {outdir}")
        print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
