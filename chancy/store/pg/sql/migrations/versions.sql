-- The record of applied migrations (the migrations table) and the advisory lock that
-- serialises migrating across processes: statements run on a dedicated session.

-- name: lock
SELECT pg_advisory_lock(%(key)s);

-- name: unlock
SELECT pg_advisory_unlock(%(key)s);

-- name: create_versions_table
CREATE TABLE IF NOT EXISTS {migrations} (
    version integer PRIMARY KEY,
    description text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: versions_table_exists
-- The table's name (not quoted: a prefix is lower-case letters, digits and underscores).
SELECT to_regclass(%(table)s);

-- name: current_version
SELECT coalesce(max(version), 0) FROM {migrations};

-- name: record
INSERT INTO {migrations} (version, description) VALUES (%(version)s, %(description)s);
