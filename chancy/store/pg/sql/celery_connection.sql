-- The statements of the per-process connection that stock Celery processes (the kombu
-- transport, the result backend) use besides their operations' own (the schema check it
-- makes on every new connection is the migrations' versions.sql).

-- name: listen
-- {channel}: the channel's name, as an identifier.
LISTEN {channel};
