"""The cluster's statement files as loaded, without a database: migrations numbered
without gaps, each with its recorded description and complete statements for any prefix;
which are pending; who leads, read from a session name; a DSN pointed at another database."""

import pytest
from psycopg.conninfo import conninfo_to_dict

from chancy.migrations import Names
from chancy.store.pg import leadership, migrations, server
from chancy.store.pg.statements import ready


def test_migrations_are_numbered_without_gaps_and_described() -> None:
    assert [m.version for m in migrations.MIGRATIONS] == list(range(1, migrations.LATEST_VERSION + 1))
    assert migrations.MIGRATIONS[0].description == "jobs and workers"
    assert migrations.MIGRATIONS[1].description == "cluster: queue settings, worker liveness, cron schedules"
    assert all(m.description and "\n" not in m.description for m in migrations.MIGRATIONS)


@pytest.mark.parametrize("prefix", ["chancy_", "other_"])
def test_every_migration_statement_names_the_prefix_tables(prefix: str) -> None:
    for migration in migrations.MIGRATIONS:
        statements = [ready(s).decode() for s in migration.compose(Names(prefix))]
        assert statements, migration
        for statement in statements:
            assert f'"{prefix}' in statement and "{" not in statement.replace("'{}'", ""), statement
            assert not statement.startswith("--"), statement


def test_migration_statements_print_as_a_script() -> None:
    """``chancy migrate --dry-run`` ends each printed statement with a semicolon: the
    statements themselves come without theirs (it printed ';;')."""
    for migration in migrations.MIGRATIONS:
        for statement in migration.compose(Names("chancy_")):
            assert not statement.as_string(None).rstrip().endswith(";"), statement


def test_pending_migrations() -> None:
    latest = migrations.LATEST_VERSION
    assert [m.version for m in migrations.pending(0)] == list(range(1, latest + 1))
    assert [m.version for m in migrations.pending(2, 4)] == [3, 4]
    assert migrations.pending(latest) == []
    assert migrations.pending(3, 2) == []


@pytest.mark.parametrize("rows, leader", [
    ([], None),
    ([("chancy-leader:host@123",)], "host@123"),
    ([("psql",)], "psql"),  # a lock taken by hand shows its session's own name
])
def test_current_leader_is_read_from_the_session_name(rows, leader) -> None:
    statement = leadership.LeadershipSQL(Names("chancy_")).current_leader()
    assert statement.mapper(rows) == leader


def test_leader_session_names_fit_postgres() -> None:
    statement = leadership.LeadershipSQL(Names("chancy_")).name_session("w" * 100)
    assert statement.params["application_name"] == ("chancy-leader:" + "w" * 100)[:63]


def test_with_dbname_keeps_the_dsn_form() -> None:
    url = "postgresql://u:p@h:5/old?sslmode=require"
    assert server.with_dbname(url, "new db") == "postgresql://u:p@h:5/new%20db?sslmode=require"
    assert conninfo_to_dict(server.with_dbname("host=h dbname=old user=u", "new db")) == {
        "host": "h", "dbname": "new db", "user": "u"}
