"""Numbered schema migrations, applied in order under an advisory lock, each recorded.

Every statement is a template whose ``{name}`` fields are table and index names derived
from the app's prefix and composed with :class:`psycopg.sql.Identifier`, never by
string concatenation of user input."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import Any, Iterable

from psycopg import sql

from chancy.errors import ConfigurationError

PREFIX_PATTERN = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")


def validate_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not PREFIX_PATTERN.match(prefix):
        raise ConfigurationError(
            f"Table prefix {prefix!r} is invalid: use lower-case letters, digits and "
            "underscores, starting with a letter or underscore (at most 41 characters)."
        )
    return prefix


class Names:
    """Every identifier of one Chancy schema, derived from its prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = validate_prefix(prefix)

    def ident(self, suffix: str) -> sql.Identifier:
        return sql.Identifier(self.prefix + suffix)

    def channel(self, suffix: str) -> str:
        return self.prefix + suffix

    def advisory_key(self, purpose: str) -> int:
        """A stable 63-bit advisory-lock key for this prefix and purpose."""
        digest = hashlib.sha256(f"{self.prefix}:{purpose}".encode()).digest()
        return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)

    def fields(self) -> dict[str, sql.Identifier]:
        return {name: self.ident(name) for name in IDENTIFIERS}


IDENTIFIERS = (
    "jobs",
    "jobs_pending",
    "jobs_scheduled",
    "jobs_running",
    "jobs_unique",
    "jobs_finished",
    "workers",
    "migrations",
    "queues",
    "cron",
    "cron_due",
    "workers_expiry",
    "task_rates",
    "kombu_queues",
    "kombu_bindings",
    "kombu_messages",
    "kombu_messages_queue",
    "kombu_messages_expiry",
    "kombu_queues_expiry",
    "cron_pkey",
    "cron_namespace",
    "celery_groups",
    "celery_groups_expiry",
    "celery_chords",
    "celery_chords_fired",
    "celery_chord_parts",
)


@dataclasses.dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]

    def compose(self, names: Names) -> list[sql.Composed]:
        return [sql.SQL(statement).format(**names.fields()) for statement in self.statements]


LIVE = "('pending', 'scheduled', 'running', 'retrying')"

#: The latest and earliest times every reader of a row can load: Python's datetime stops
#: at years 9999 and 1, and a session time zone up to 14 hours away must not cross them.
LAST_LOADABLE = "timestamptz '9999-12-31 00:00:00+00'"
FIRST_LOADABLE = "timestamptz '0001-01-02 00:00:00+00'"
JOB_TIMES = ("scheduled_at", "expires_at", "created_at", "started_at", "completed_at")


def _clamp_infinite_times(columns: tuple[str, ...]) -> str:
    """An UPDATE of the jobs whose times are ±infinity (which no reader can load) to the
    last/first loadable time: a time 'never' stays never due, '-infinity' stays due."""
    sets = ", ".join(
        f"{c} = CASE WHEN {c} = 'infinity' THEN {LAST_LOADABLE} WHEN {c} = '-infinity' THEN {FIRST_LOADABLE} "
        f"ELSE {c} END" for c in columns
    )
    return f"UPDATE {{jobs}} SET {sets} WHERE " + " OR ".join(f"NOT isfinite({c})" for c in columns)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "jobs and workers",
        (
            """
            CREATE TABLE {jobs} (
                id uuid PRIMARY KEY,
                queue text NOT NULL,
                func text NOT NULL,
                args jsonb NOT NULL DEFAULT '[]',
                kwargs jsonb NOT NULL DEFAULT '{{}}',
                priority integer NOT NULL DEFAULT 0,
                state text NOT NULL DEFAULT 'pending' CHECK (state IN
                    ('pending', 'scheduled', 'running', 'retrying',
                     'succeeded', 'failed', 'cancelled', 'expired')),
                attempts integer NOT NULL DEFAULT 0,
                max_attempts integer NOT NULL DEFAULT 1 CHECK (max_attempts >= 1),
                scheduled_at timestamptz NOT NULL DEFAULT now(),
                expires_at timestamptz,
                created_at timestamptz NOT NULL DEFAULT now(),
                started_at timestamptz,
                completed_at timestamptz,
                taken_by text,
                unique_key text,
                limits jsonb NOT NULL DEFAULT '[]',
                backoff jsonb,
                meta jsonb NOT NULL DEFAULT '{{}}',
                result jsonb,
                errors jsonb NOT NULL DEFAULT '[]'
            )
            """,
            # The claim path reads only these two partial indexes; their predicates match
            # the claim query's filters exactly, so finished rows are never scanned.
            "CREATE INDEX {jobs_pending} ON {jobs} (queue, priority DESC, id) WHERE state = 'pending'",
            "CREATE INDEX {jobs_scheduled} ON {jobs} (queue, scheduled_at) "
            "WHERE state IN ('scheduled', 'retrying')",
            "CREATE INDEX {jobs_running} ON {jobs} (taken_by) WHERE state = 'running'",
            "CREATE UNIQUE INDEX {jobs_unique} ON {jobs} (unique_key) "
            f"WHERE unique_key IS NOT NULL AND state IN {LIVE}",
            "CREATE INDEX {jobs_finished} ON {jobs} (completed_at) "
            "WHERE state IN ('succeeded', 'failed', 'cancelled', 'expired')",
            """
            CREATE TABLE {workers} (
                worker_id text PRIMARY KEY,
                hostname text NOT NULL,
                pid integer NOT NULL,
                queues text[] NOT NULL DEFAULT '{{}}',
                tags text[] NOT NULL DEFAULT '{{}}',
                started_at timestamptz NOT NULL DEFAULT now(),
                last_seen timestamptz NOT NULL DEFAULT now()
            )
            """,
        ),
    ),
    Migration(
        2,
        "cluster: queue settings, worker liveness, cron schedules",
        (
            # Runtime queue settings; a queue without a row runs on its code's settings.
            # paused_until 'infinity' is an open-ended pause. rate_starts holds the claim
            # times of the last rate_limit jobs started (a sliding window, see the claim).
            """
            CREATE TABLE {queues} (
                name text PRIMARY KEY,
                concurrency integer CHECK (concurrency >= 1),
                paused_until timestamptz,
                rate_limit integer CHECK (rate_limit >= 1),
                rate_period float8 CHECK (rate_period > 0),
                rate_starts timestamptz[] NOT NULL DEFAULT '{{}}',
                updated_at timestamptz NOT NULL DEFAULT now(),
                CHECK ((rate_limit IS NULL) = (rate_period IS NULL))
            )
            """,
            # Each worker states by when it will have heartbeated again; past that it is dead.
            "ALTER TABLE {workers} ADD COLUMN expires_at timestamptz NOT NULL "
            "DEFAULT now() + interval '30 seconds'",
            "CREATE INDEX {workers_expiry} ON {workers} (expires_at)",
            """
            CREATE TABLE {cron} (
                name text PRIMARY KEY,
                job jsonb NOT NULL,
                cron text,
                every float8 CHECK (every > 0),
                timezone text NOT NULL DEFAULT 'UTC',
                expires_in float8 CHECK (expires_in > 0),
                next_fire_at timestamptz NOT NULL,
                last_fired_at timestamptz,
                enabled boolean NOT NULL DEFAULT true,
                created_at timestamptz NOT NULL DEFAULT now(),
                updated_at timestamptz NOT NULL DEFAULT now(),
                CHECK ((cron IS NULL) <> (every IS NULL))
            )
            """,
            "CREATE INDEX {cron_due} ON {cron} (next_fire_at) WHERE enabled",
        ),
    ),
    Migration(
        3,
        "task rate limits",
        (
            # One row per rate-limited task: the start times of its jobs within the last
            # period (the limit itself is declared by the task's code), and until when
            # jobs over the limit have already been given times to come back (see the
            # gate in chancy/queues/rate_sql.py).
            """
            CREATE TABLE {task_rates} (
                task text PRIMARY KEY,
                starts timestamptz[] NOT NULL DEFAULT '{{}}',
                deferred_until timestamptz NOT NULL DEFAULT '-infinity'
            )
            """,
        ),
    ),
    Migration(
        4,
        "celery transport: exchange bindings, transient queues and their messages",
        (
            # Queues a kombu client declared or bound: a transient one (auto_delete,
            # exclusive or expiring: remote-control, reply, event and rpc result queues)
            # holds raw messages in kombu_messages, never jobs; it lives until expires_at,
            # pushed back while a consumer reads it (NULL: a durable queue, for good).
            """
            CREATE TABLE {kombu_queues} (
                name text PRIMARY KEY,
                transient boolean NOT NULL,
                message_ttl float8 CHECK (message_ttl > 0),
                expires float8 CHECK (expires > 0),
                expires_at timestamptz
            )
            """,
            "CREATE INDEX {kombu_queues_expiry} ON {kombu_queues} (expires_at) WHERE expires_at IS NOT NULL",
            # Bindings seen by every process, so a fanout or a reply reaches queues that
            # other processes declared. pattern: a topic exchange's regular expression.
            """
            CREATE TABLE {kombu_bindings} (
                exchange text NOT NULL,
                routing_key text NOT NULL,
                queue text NOT NULL REFERENCES {kombu_queues} (name) ON DELETE CASCADE,
                pattern text,
                PRIMARY KEY (exchange, routing_key, queue)
            )
            """,
            # A message of a transient queue: taken (deleted) by one read, gone at expires_at.
            """
            CREATE TABLE {kombu_messages} (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                queue text NOT NULL,
                payload text NOT NULL,
                expires_at timestamptz NOT NULL
            )
            """,
            "CREATE INDEX {kombu_messages_queue} ON {kombu_messages} (queue, id)",
            "CREATE INDEX {kombu_messages_expiry} ON {kombu_messages} (expires_at)",
        ),
    ),
    Migration(
        5,
        "cron schedules belong to an app's namespace",
        (
            # Existing rows keep their timing. Cron.schedule's rows go to the default
            # namespace (a native app's, which keeps firing them). Rows a Celery app's
            # beat_schedule wrote ('celery:…') cannot tell which app wrote them: they get
            # no namespace and fire nowhere until the app whose entry names one syncs and
            # adopts it (next tick kept; chancy/plugins/cron.py).
            "ALTER TABLE {cron} ADD COLUMN namespace text",
            "UPDATE {cron} SET namespace = 'default' WHERE NOT starts_with(name, 'celery:')",
            "ALTER TABLE {cron} DROP CONSTRAINT {cron_pkey}",
            "CREATE UNIQUE INDEX {cron_namespace} ON {cron} (namespace, name)",
            "DROP INDEX {cron_due}",
            "CREATE INDEX {cron_due} ON {cron} (namespace, next_fire_at) WHERE enabled",
        ),
    ),
    Migration(
        6,
        "celery result backend: saved groups and chord counters; infinite job times made loadable",
        (
            # GroupResult.save(): the group's result tuple in the backend's serializer,
            # until expires_at (Celery's result_expires; NULL: kept until deleted).
            """
            CREATE TABLE {celery_groups} (
                id text PRIMARY KEY,
                payload bytea NOT NULL,
                expires_at timestamptz
            )
            """,
            "CREATE INDEX {celery_groups_expiry} ON {celery_groups} (expires_at) WHERE expires_at IS NOT NULL",
            # One row per chord applied through the backend, keyed by its header's group id:
            # size from set_chord_size (NULL: the header parts' own chord_size), added by
            # add_to_chord, done the header parts returned so far. The part that completes
            # it claims the body (claim, until claimed_until: another may take over a claim
            # whose holder died) and fired_at marks the body sent, so it is sent once.
            """
            CREATE TABLE {celery_chords} (
                group_id text PRIMARY KEY,
                size integer CHECK (size >= 0),
                added integer NOT NULL DEFAULT 0,
                done integer NOT NULL DEFAULT 0,
                claim text,
                claimed_until timestamptz,
                fired_at timestamptz,
                created_at timestamptz NOT NULL DEFAULT now()
            )
            """,
            "CREATE INDEX {celery_chords_fired} ON {celery_chords} (fired_at) WHERE fired_at IS NOT NULL",
            # Each header part's outcome, once per (task id, index in the header): a part
            # run twice (redelivered after a lost worker) counts once.
            """
            CREATE TABLE {celery_chord_parts} (
                group_id text NOT NULL REFERENCES {celery_chords} (group_id) ON DELETE CASCADE,
                task_id text NOT NULL,
                position bigint NOT NULL,
                payload bytea NOT NULL,
                PRIMARY KEY (group_id, task_id, position)
            )
            """,
            # Rows an earlier result backend parked at 'infinity' could not be loaded by
            # any reader ('timestamp too large'); it now parks them at LAST_LOADABLE.
            _clamp_infinite_times(JOB_TIMES),
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version


def pending(current: int, target: int | None = None) -> Iterable[Migration]:
    target = LATEST_VERSION if target is None else target
    return [m for m in MIGRATIONS if current < m.version <= target]


async def current_version_async(conn: Any, names: Names) -> int:
    """The schema version recorded in the database (0 when Chancy was never migrated)."""
    cur = await conn.execute("SELECT to_regclass(%s)", (names.prefix + "migrations",))
    if (await cur.fetchone())[0] is None:
        return 0
    cur = await conn.execute(sql.SQL("SELECT coalesce(max(version), 0) FROM {}").format(names.ident("migrations")))
    return (await cur.fetchone())[0]


async def apply_async(conn: Any, names: Names, target: int | None = None) -> list[int]:
    """Apply pending migrations on ``conn`` (autocommit), each in its own transaction,
    serialised across processes by an advisory lock."""
    key = names.advisory_key("migrate")
    await conn.execute("SELECT pg_advisory_lock(%s)", (key,))
    try:
        await conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (version integer PRIMARY KEY, description text NOT NULL, "
                "applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(names.ident("migrations"))
        )
        applied = []
        for migration in pending(await current_version_async(conn, names), target):
            async with conn.transaction():
                for statement in migration.compose(names):
                    await conn.execute(statement)
                await conn.execute(
                    sql.SQL("INSERT INTO {} (version, description) VALUES (%s, %s)").format(names.ident("migrations")),
                    (migration.version, migration.description),
                )
            applied.append(migration.version)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
