-- The Celery result backend's saved groups and chord counters (tables of migration 6):
-- what Celery's key-value backends keep in keys, kept in Postgres rows.
--
-- A chord's row is created (or reset, for a frozen chord applied again) before any
-- header part is sent. Each header part's return inserts its outcome once per (task id,
-- index) and raises `done` in the same statement; the row lock of that UPDATE serialises
-- concurrent parts, so exactly one of them sees the chord complete and claims its body.
-- A claim lasts %(lease)s seconds: a part run again after the claimer died (redelivered
-- after a lost worker) takes the claim over once it lapsed, so a crash cannot strand the
-- body; fired_at then makes every later return a no-op.

-- name: save_group
INSERT INTO {celery_groups} (id, payload, expires_at)
VALUES (%(id)s, %(payload)s, now() + make_interval(secs => %(expires)s))
ON CONFLICT (id) DO UPDATE SET payload = EXCLUDED.payload, expires_at = EXCLUDED.expires_at;

-- name: prune_groups
DELETE FROM {celery_groups} WHERE expires_at < now();

-- name: restore_group
SELECT payload FROM {celery_groups} WHERE id = %(id)s AND (expires_at IS NULL OR expires_at >= now());

-- name: delete_group
DELETE FROM {celery_groups} WHERE id = %(id)s;

-- name: start_chord
-- A chord applied again under the same (frozen) group id is a new run.
WITH started AS (
    INSERT INTO {celery_chords} AS c (group_id) VALUES (%(id)s)
    ON CONFLICT (group_id) DO UPDATE SET size = NULL, added = 0, done = 0, claim = NULL,
        claimed_until = NULL, fired_at = NULL, created_at = now()
    RETURNING group_id
)
DELETE FROM {celery_chord_parts} WHERE group_id = (SELECT group_id FROM started);

-- name: set_size
INSERT INTO {celery_chords} AS c (group_id, size) VALUES (%(id)s, %(size)s)
ON CONFLICT (group_id) DO UPDATE SET size = EXCLUDED.size;

-- name: add
INSERT INTO {celery_chords} AS c (group_id, added) VALUES (%(id)s, %(count)s)
ON CONFLICT (group_id) DO UPDATE SET added = c.added + EXCLUDED.added;

-- name: ensure_chord
-- A chord started by another version of the backend.
INSERT INTO {celery_chords} (group_id) VALUES (%(id)s) ON CONFLICT (group_id) DO NOTHING;

-- name: part_return
-- Count one header part's return; the caller (token) claims the body when the chord is
-- complete: done + this part >= size + added, not fired, and no live claim of another.
-- fallback_size: the size the part's own request carries, for a chord whose size was
-- never set. The part is not recorded once the body was sent. SET reads only `c`: under
-- a concurrent part's update Postgres re-reads the locked row for it (a value computed
-- beforehand in a CTE would lose that part's count).
WITH part AS (
    INSERT INTO {celery_chord_parts} (group_id, task_id, position, payload)
    SELECT %(id)s, %(task_id)s, %(position)s, %(payload)s
    WHERE NOT EXISTS (SELECT 1 FROM {celery_chords} WHERE group_id = %(id)s AND fired_at IS NOT NULL)
    ON CONFLICT DO NOTHING
    RETURNING 1
)
UPDATE {celery_chords} c SET
    done = c.done + (SELECT count(*) FROM part),
    claim = CASE WHEN c.done + (SELECT count(*) FROM part) >= COALESCE(c.size, %(fallback_size)s) + c.added
                      AND c.fired_at IS NULL
                      AND (c.claim IS NULL OR c.claimed_until < now() OR c.claim = %(token)s)
                 THEN %(token)s ELSE c.claim END,
    claimed_until = CASE WHEN c.done + (SELECT count(*) FROM part) >= COALESCE(c.size, %(fallback_size)s) + c.added
                              AND c.fired_at IS NULL
                              AND (c.claim IS NULL OR c.claimed_until < now() OR c.claim = %(token)s)
                         THEN now() + make_interval(secs => %(lease)s) ELSE c.claimed_until END
WHERE c.group_id = %(id)s
RETURNING c.done, COALESCE(c.size, %(fallback_size)s) + c.added, c.fired_at IS NOT NULL,
          c.claim IS NOT DISTINCT FROM %(token)s;

-- name: parts
SELECT payload FROM {celery_chord_parts} WHERE group_id = %(id)s ORDER BY position, task_id;

-- name: fired
-- The body was sent (or the chord failed): later returns change nothing. Parts are
-- dropped, and chords that fired longer ago than %(keep)s seconds pruned.
WITH fired AS (
    UPDATE {celery_chords} SET fired_at = now(), claim = NULL, claimed_until = NULL
    WHERE group_id = %(id)s AND claim = %(token)s
    RETURNING group_id
),
dropped AS (
    DELETE FROM {celery_chord_parts} WHERE group_id IN (SELECT group_id FROM fired)
)
DELETE FROM {celery_chords} WHERE fired_at < now() - make_interval(secs => %(keep)s);
