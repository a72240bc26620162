-- Leadership: a session-level advisory lock on a session of its own, named after its
-- worker (application_name 'chancy-leader:<worker id>', cut to Postgres' 63 bytes), so
-- who leads can be read from pg_locks and pg_stat_activity. The lock key is split as
-- Postgres shows a bigint advisory key in pg_locks: classid its high 32 bits, objid its
-- low 32 bits, objsubid 1.

-- name: name_session
-- Name the session after its worker, and make the server notice a vanished peer within
-- ~25 s (TCP keepalives), so a dead leader's lock does not wait for the OS default (hours).
SELECT set_config('application_name', %(application_name)s, false),
       set_config('tcp_keepalives_idle', '10', false),
       set_config('tcp_keepalives_interval', '5', false),
       set_config('tcp_keepalives_count', '3', false);

-- name: try_lock
SELECT pg_try_advisory_lock(%(key)s);

-- name: depose_dead_leader
-- End the session holding the lock if its worker is dead by the liveness rule: no row in
-- workers whose expiry is still ahead names it. Answers one row per session ended (true)
-- or that could not be signalled (false).
SELECT pg_terminate_backend(a.pid)
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.classid::bigint = %(key_high)s AND l.objid::bigint = %(key_low)s
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND a.application_name LIKE %(prefix)s || '%%'
  AND NOT EXISTS (
      SELECT 1 FROM {workers} w
      WHERE w.expires_at > now() AND left(%(prefix)s || w.worker_id, 63) = a.application_name
  );

-- name: current_leader
-- The session name of who holds the lock in this database (at most one row).
SELECT a.application_name
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.classid::bigint = %(key_high)s AND l.objid::bigint = %(key_low)s
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database());
