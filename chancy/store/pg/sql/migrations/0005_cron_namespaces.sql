-- description: cron schedules belong to an app's namespace
-- Existing rows keep their timing. Cron.schedule's rows go to the default namespace (a
-- native app's, which keeps firing them). Rows a Celery app's beat_schedule wrote
-- ('celery:...') cannot tell which app wrote them: they get no namespace and fire nowhere
-- until the app whose entry names one syncs and adopts it (next tick kept; see adopt in
-- schedules.sql).

-- name: cron_namespace_column
ALTER TABLE {cron} ADD COLUMN namespace text;

-- name: default_namespace
UPDATE {cron} SET namespace = 'default' WHERE NOT starts_with(name, 'celery:');

-- name: drop_cron_pkey
ALTER TABLE {cron} DROP CONSTRAINT {cron_pkey};

-- name: cron_namespace
CREATE UNIQUE INDEX {cron_namespace} ON {cron} (namespace, name);

-- name: drop_cron_due
DROP INDEX {cron_due};

-- name: cron_due
CREATE INDEX {cron_due} ON {cron} (namespace, next_fire_at) WHERE enabled;
