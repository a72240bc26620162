-- The statements of the per-process connection that stock Celery processes (the kombu
-- transport, the result backend) use: listening, and the schema check the transport
-- makes on every new connection.

-- name: listen
-- {channel}: the channel's name, as an identifier.
LISTEN {channel};

-- name: migrations_table
-- Whether the migrations table exists (%(table)s: its name): NULL when it does not.
SELECT to_regclass(%(table)s);

-- name: schema_version
SELECT coalesce(max(version), 0) FROM {migrations};
