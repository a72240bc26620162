"""The only door to persistence.

Everything that reads or writes the database goes through a store: ``chancy.store.pg``
for Postgres (every pool, connection and SQL statement; the statements themselves in
``chancy/store/pg/sql/*.sql``), ``chancy.store.memory*`` for the in-process store used by
tests and development. Nothing outside this package writes SQL or opens a connection;
``tests/test_architecture.py`` checks it.

What a store does is written as typed protocols, each implemented by both stores and
proven to agree by one contract suite run on both (``tests/store/``):

- :mod:`chancy.store.protocol` — ``JobStore``, a queue's jobs: push, read, wait, claim,
  write back, cancel, requeue, the rate gate.
- :mod:`chancy.store.cluster` — ``ClusterStore``, what workers share: heartbeats and
  recovery, pruning, queue settings, the leader seat, and (:mod:`chancy.store.schedules`)
  cron schedules.
- :mod:`chancy.store.queries` — ``JobQueries``, reading jobs by a filter.

:mod:`chancy.store.of_app` says which store an app's (or a worker's) state is in. The
operators' statements (CLI, dashboard: :mod:`chancy.store.pg.admin`,
:mod:`chancy.store.pg.dashboard`) and the Celery transport's and result backend's are
Postgres's alone: they serve other processes, which an in-process store has none of."""
