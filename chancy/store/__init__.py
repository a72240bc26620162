"""The only door to persistence.

Everything that reads or writes the database goes through a store: ``chancy.store.pg``
for Postgres (every pool, connection and SQL statement; the statements themselves in
``chancy/store/pg/sql/*.sql``), ``chancy.store.memory`` for the in-process store used by
tests and development. Nothing outside this package writes SQL or opens a connection;
``tests/test_architecture.py`` checks it."""
