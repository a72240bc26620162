"""The jobs statements of ``chancy/store/pg/sql/jobs.sql`` agree with each other and with
the Python that builds and maps them: the copies of the claim and the write-back in the
combined statement, the record columns, the live states, the announcement batch size, and
the INSERTs assembled from their named parts. Pure: no database."""

from __future__ import annotations

import re
import uuid

from chancy.job import Job
from chancy.migrations import LIVE, Names
from chancy.store.pg.jobs import DONE_IDS_PER_NOTIFICATION, RECORD_COLUMNS, JobSQL
from chancy.store.pg.statements import SqlFile

FILE = SqlFile("jobs.sql", Names("chancy_").fields())


def _code(name: str) -> str:
    """A statement's text without its comments, its whitespace collapsed."""
    lines = [line for line in FILE.template(name).splitlines() if not line.strip().startswith("--")]
    return re.sub(r"\s+", " ", " ".join(lines)).strip()


def _ctes(name: str, final_select: str) -> str:
    code = _code(name)
    assert code.startswith("WITH ") and code.endswith(final_select), name
    return code[len("WITH "):-len(final_select)].strip()


#: What each claim's rows say besides the job: whether keyed jobs wait in the queue
#: (the keyed_waiting statement, as a column).
KEYED = f"({_code('keyed_waiting')}) AS waiting (keyed)"


def test_write_back_and_claim_is_the_write_back_then_the_claim():
    write_back = _ctes("write_back", "SELECT id FROM updated WHERE (SELECT count(*) FROM announced) >= 0")
    claim = _ctes("claim", f"SELECT * FROM claimed, {KEYED} ORDER BY priority DESC, id")
    both = _ctes("write_back_and_claim", f"SELECT * FROM claimed, {KEYED} "
                 "WHERE (SELECT count(*) FROM announced) >= 0 ORDER BY priority DESC, id")
    assert both == f"{write_back}, {claim}"


def _cte(ctes: str, name: str, following: str) -> str:
    return ctes[ctes.index(f"{name} AS ("):ctes.index(f"), {following} AS (")]


#: The keyed claims' last SELECT: the jobs and their flags (crowded, blocked, keyed).
_KEYED_FLAGS = (
    "SELECT claimed.*, EXISTS (SELECT 1 FROM fitting WHERE NOT fits AND running < concurrency) AS crowded, "
    "{blocked} AS blocked, "
    "coalesce((SELECT true FROM {{jobs}} w WHERE w.queue = %(queue)s AND w.concurrency_key IS NOT NULL "
    "AND w.state IN ('scheduled', 'retrying', 'pending') AND w.scheduled_at <= now() "
    "AND w.id NOT IN (SELECT id FROM chosen) ORDER BY w.scheduled_at LIMIT 1), false) AS keyed "
    "FROM (SELECT 1) AS always LEFT JOIN claimed ON true ORDER BY claimed.priority DESC, claimed.id")


def test_the_keyed_claims_share_the_plain_claims_settings_start_and_rate_count():
    """Only their choice differs: the front's rows (claim_keyed) or each key's best rows up
    to its free places (claim_keyed_heads), then the same places check."""
    plain = _ctes("claim", f"SELECT * FROM claimed, {KEYED} ORDER BY priority DESC, id")
    front = _ctes("claim_keyed", _KEYED_FLAGS.format(
        blocked="EXISTS (SELECT 1 FROM fitting WHERE NOT fits AND running >= concurrency)"))
    code = _code("claim_keyed_heads")
    assert code.startswith("WITH RECURSIVE ")
    heads = _ctes("claim_keyed_heads", _KEYED_FLAGS.format(blocked="false"))[len("RECURSIVE "):]
    for keyed in (front, heads):
        assert keyed[:keyed.index("), ")] == plain[:plain.index("), ")]  # settings
        assert _cte(keyed, "limiter", "ready" if keyed is front else "keys") == _cte(plain, "limiter", "ready")
        assert _cte(keyed, "claimed", "counted") == _cte(plain, "claimed", "counted")
        assert keyed[keyed.index("counted AS ("):] == plain[plain.index("counted AS ("):]
    assert _cte(front, "due", "candidates") == _cte(heads, "due", "candidates")
    assert _cte(front, "candidates", "chosen") == _cte(heads, "candidates", "chosen")
    assert _cte(front, "chosen", "claimed").replace(
        "ORDER BY priority", "ORDER BY CASE WHEN %(fair)s THEN place END, priority") == _cte(heads, "chosen", "claimed")
    assert "WHERE concurrency_key IS NULL" in _cte(plain, "chosen", "claimed")


def test_statements_returning_jobs_list_the_record_columns_in_order():
    columns = RECORD_COLUMNS.replace(" ", "")
    for name in ("get", "get_many"):
        assert _code(name).replace(" ", "").startswith(f"SELECT{columns}FROM"), name
    qualified = ",".join(f"j.{column}" for column in columns.split(","))
    for name in ("claim", "write_back_and_claim", "claim_keyed", "claim_keyed_heads"):
        assert f"RETURNING{qualified})" in _code(name).replace(" ", ""), name


def test_live_states_and_announcement_batches_match_the_python_constants():
    text = "\n".join(_code(name) for name in FILE.names())
    assert re.findall(r"state IN (\('pending'[^)]*\))", text) and all(
        found == LIVE for found in re.findall(r"state IN (\('pending'[^)]*\))", text))
    batches = re.findall(r"\(row_number\(\) OVER \(\) - 1\) / (\d+)", text)
    assert len(batches) == 3 and set(batches) == {str(DONE_IDS_PER_NOTIFICATION)}


def test_every_complete_statement_composes():
    statements = JobSQL(Names("chancy_")).statements
    parts = {"insert_values", "insert_unnest", "insert_scheduled_at", "insert_scheduled_state",
             "insert_returning", "copy", "listen_done"}
    for name in statements.names():
        if name not in parts:
            assert statements[name] and b"--" not in statements[name], name


def test_the_inserts_assembled_from_their_parts():
    statements = JobSQL(Names("chancy_"))
    plain = statements.insert([Job("t.f", args=(1,))], [uuid.UUID(int=1)]).query
    assert plain == (
        b'INSERT INTO "chancy_jobs" ("id", "queue", "func", "args") VALUES '
        b'(%(id)s::uuid, %(queue)s::text, %(func)s::text, %(args)s::jsonb)\n'
        b"RETURNING id, CASE WHEN state = 'pending' THEN pg_notify('chancy_pushed', queue) END")
    many = statements.insert([Job("t.f", unique_key="k").after(60), Job("t.f")], [uuid.UUID(int=1), uuid.UUID(int=2)])
    assert many.query == (
        b'INSERT INTO "chancy_jobs" ("id", "queue", "func", "scheduled_at", "unique_key", "state") '
        b'SELECT "id", "queue", "func", COALESCE("scheduled_at", now()), "unique_key", '
        b"CASE WHEN \"scheduled_at\" > now() THEN 'scheduled' ELSE 'pending' END FROM unnest("
        b"%(id)b::uuid[], %(queue)b::text[], %(func)b::text[], %(scheduled_at)b::timestamptz[], "
        b'%(unique_key)b::text[]) AS t("id", "queue", "func", "scheduled_at", "unique_key")\n'
        b"ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL\n"
        b"AND state IN ('pending', 'scheduled', 'running', 'retrying') DO NOTHING\n"
        b"RETURNING id, CASE WHEN state = 'pending' THEN pg_notify('chancy_pushed', queue) END")
    one, params = statements.insert_one(uuid.UUID(int=1), Job("t.f", args=(1,), priority=3))
    assert one.query == (
        b'INSERT INTO "chancy_jobs" ("id", "queue", "func", "args", "priority") VALUES '
        b"($1::uuid, $2::text, $3::text, $4::jsonb, $5::int)\n"
        b"RETURNING id, CASE WHEN state = 'pending' THEN pg_notify('chancy_pushed', queue) END")
    assert params == [b"%032x" % 1, b"default", b"t.f", b"[1]", b"3"]
