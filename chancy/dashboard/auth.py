"""Who may use the dashboard: configured users with scrypt-hashed passwords, their roles,
server-side sessions, and a throttle on failed logins.

Passwords are never stored or compared in clear: ``hash_password`` makes a salted scrypt
hash, ``User.verify`` recomputes it and compares in constant time. Sessions live in the
dashboard process (a random token in an ``HttpOnly`` cookie maps to the user and that
session's CSRF token), so logging out really ends a session and nothing secret is in the
cookie itself."""

from __future__ import annotations

import base64
import dataclasses
import enum
import hashlib
import hmac
import secrets
import threading
import time
from pathlib import Path
from typing import Iterable, Mapping

from chancy.errors import ConfigurationError

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SESSION_IDLE_SECONDS = 8 * 3600
SESSION_MAX_SECONDS = 24 * 3600


class Role(str, enum.Enum):
    """``viewer`` sees everything; ``operator`` may also change jobs and queues."""

    VIEWER = "viewer"
    OPERATOR = "operator"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """A salted scrypt hash, ``scrypt$n$r$p$salt$digest``, to put in the users file."""
    if not isinstance(password, str) or len(password) < 8:
        raise ConfigurationError("A dashboard password needs at least 8 characters")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=2**26, dklen=32)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def _parse_hash(encoded: str) -> tuple[int, int, int, bytes, bytes]:
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            raise ValueError(scheme)
        return int(n), int(r), int(p), _unb64(salt), _unb64(digest)
    except ValueError:
        raise ConfigurationError(
            "A dashboard password hash must look like 'scrypt$n$r$p$salt$digest' "
            "(make one with `chancy dashboard --hash-password`)"
        ) from None


@dataclasses.dataclass(frozen=True)
class User:
    name: str
    password_hash: str
    role: Role = Role.VIEWER

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or ":" in self.name or self.name != self.name.strip():
            raise ConfigurationError(
                f"Dashboard user name {self.name!r} must be non-empty, without ':' or spaces around")
        object.__setattr__(self, "role", Role(self.role))
        _parse_hash(self.password_hash)

    @property
    def can_operate(self) -> bool:
        return self.role is Role.OPERATOR

    def verify(self, password: str) -> bool:
        return _verify(self.password_hash, password)


def _verify(encoded: str, password: str) -> bool:
    n, r, p, salt, expected = _parse_hash(encoded)
    actual = hashlib.scrypt(password.encode("utf-8", "surrogatepass"), salt=salt, n=n, r=r, p=p, maxmem=2**26,
                            dklen=len(expected))
    return hmac.compare_digest(actual, expected)


#: Verified against when the user name is unknown, so a wrong name takes as long as a
#: wrong password and login timing does not reveal which names exist.
_DECOY_HASH = f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(b'0' * 16)}${_b64(b'0' * 32)}"


def parse_users(lines: Iterable[str], source: str = "users") -> dict[str, User]:
    """Users from ``name:role:hash`` lines (``#`` starts a comment)."""
    users: dict[str, User] = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":", 2)
        if len(parts) != 3:
            raise ConfigurationError(f"{source} line {number}: expected 'name:role:hash', got {line[:40]!r}")
        name, role, password_hash = parts
        if role not in {r.value for r in Role}:
            raise ConfigurationError(f"{source} line {number}: role must be 'viewer' or 'operator', got {role!r}")
        if name in users:
            raise ConfigurationError(f"{source} line {number}: user {name!r} is listed twice")
        users[name] = User(name, password_hash, Role(role))
    return users


def load_users(path: str | Path) -> dict[str, User]:
    """Read a users file (see :func:`parse_users`)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigurationError(f"Cannot read the dashboard users file {str(path)!r}: {exc.strerror}") from None
    return parse_users(text.splitlines(), str(path))


def as_user_map(users: Mapping[str, User] | Iterable[User]) -> dict[str, User]:
    found = dict(users) if isinstance(users, Mapping) else {u.name: u for u in users}
    if not found:
        raise ConfigurationError(
            "The dashboard needs at least one user: nothing is served without a login "
            "(give users=[User(...)] or a users file)"
        )
    return found


@dataclasses.dataclass
class Session:
    user: User
    csrf_token: str
    created: float
    last_used: float
    #: Messages for the next page this session sees (an action's outcome after redirect).
    notices: list[tuple[str, str]] = dataclasses.field(default_factory=list)


class SessionStore:
    """Sessions of this dashboard process, keyed by an unguessable token."""

    def __init__(self, idle_seconds: float = SESSION_IDLE_SECONDS, max_seconds: float = SESSION_MAX_SECONDS) -> None:
        self.idle_seconds = idle_seconds
        self.max_seconds = max_seconds
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, user: User) -> tuple[str, Session]:
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        session = Session(user, secrets.token_urlsafe(32), now, now)
        with self._lock:
            self._expire(now)
            self._sessions[token] = session
        return token, session

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        now = time.monotonic()
        with self._lock:
            session = self._sessions.get(token)
            if session is None:
                return None
            if now - session.last_used > self.idle_seconds or now - session.created > self.max_seconds:
                del self._sessions[token]
                return None
            session.last_used = now
            return session

    def end(self, token: str | None) -> None:
        with self._lock:
            self._sessions.pop(token or "", None)

    def _expire(self, now: float) -> None:
        for token, s in list(self._sessions.items()):
            if now - s.last_used > self.idle_seconds or now - s.created > self.max_seconds:
                del self._sessions[token]


class Throttled(PermissionError):
    """This client failed to log in as this user too often: refused without checking."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("Too many failed logins: wait a few minutes and try again")
        self.retry_after = retry_after


class LoginThrottle:
    """At most ``limit`` failed logins per (client, name) in ``window`` seconds.

    Keyed by client too, so that guessing a user's password from one address never locks
    that user out elsewhere (a Prometheus scraper keeps its access)."""

    def __init__(self, limit: int = 5, window: float = 300.0) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[tuple[str, str], list[float]] = {}
        self._lock = threading.Lock()

    #: Past this many tracked keys, keys without a recent failure are forgotten, so a
    #: spray of invented user names cannot grow the table without bound.
    max_keys = 10_000

    def blocked(self, key: tuple[str, str]) -> bool:
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._failures.pop(key, []) if now - t < self.window]
            if recent:
                self._failures[key] = recent
            return len(recent) >= self.limit

    def failed(self, key: tuple[str, str]) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._failures) >= self.max_keys:
                for stale in [k for k, times in self._failures.items() if now - times[-1] >= self.window]:
                    del self._failures[stale]
            self._failures.setdefault(key, []).append(now)

    def succeeded(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._failures.pop(key, None)


class Authenticator:
    """Checks credentials against the configured users."""

    def __init__(self, users: Mapping[str, User] | Iterable[User]) -> None:
        self.users = as_user_map(users)
        self.sessions = SessionStore()
        self.throttle = LoginThrottle()

    def check(self, name: str, password: str) -> User | None:
        user = self.users.get(name)
        ok = _verify(user.password_hash if user else _DECOY_HASH, password)
        return user if user is not None and ok else None

    def login(self, name: str, password: str, client: str) -> User | None:
        """The user, if ``password`` is theirs; each failure counts against ``client``
        (the address the server resolved), which raises :class:`Throttled` past the limit."""
        key = (client, name)
        if self.throttle.blocked(key):
            raise Throttled(self.throttle.window)
        user = self.check(name, password)
        if user is None:
            self.throttle.failed(key)
        else:
            self.throttle.succeeded(key)
        return user
