-- Statements about a dedicated session itself (a connection of its own, on session_dsn),
-- not about an app's tables: LISTEN, a probe of the link, and the release of the
-- session-level advisory locks it holds. {channel} is a channel name, filled in as a
-- quoted identifier.

-- name: listen
LISTEN {channel};

-- name: probe
-- A round trip: answers at once on a live link (a dead one errors or times out).
SELECT 1;

-- name: release_locks
-- Unlock every session-level advisory lock now, so a successor can take over as soon as
-- this returns (a backend releases the locks of a closed session only once it noticed).
SELECT pg_advisory_unlock_all();
