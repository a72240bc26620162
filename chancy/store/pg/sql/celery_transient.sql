-- The kombu transport's exchanges and transient queues (see
-- chancy/store/pg/celery_transient.py): bindings in kombu_bindings, transient queues in
-- kombu_queues, their raw kombu messages in kombu_messages. A queue is alive while
-- expires_at IS NULL OR expires_at > now(); a message lives until the shorter of its own
-- time to live (%(ttl)s seconds, NULL: none) and its queue's x-message-ttl (else the
-- queue's idle expiry):
--     now() + make_interval(secs => LEAST(COALESCE(q.message_ttl, q.expires), COALESCE(%(ttl)s::float8, 'infinity'::float8)))

-- name: declare
INSERT INTO {kombu_queues} (name, transient, message_ttl, expires, expires_at)
VALUES (%(queue)s, TRUE, %(message_ttl)s, %(expires)s, now() + make_interval(secs => %(expires)s))
ON CONFLICT (name) DO UPDATE SET transient = TRUE, message_ttl = EXCLUDED.message_ttl,
    expires = EXCLUDED.expires, expires_at = EXCLUDED.expires_at;

-- name: bind
-- A queue bound without being declared transient here is a durable (job) queue.
WITH queue AS (
    INSERT INTO {kombu_queues} (name, transient) VALUES (%(queue)s, FALSE)
    ON CONFLICT (name) DO NOTHING
)
INSERT INTO {kombu_bindings} (exchange, routing_key, queue, pattern)
VALUES (%(exchange)s, %(routing_key)s, %(queue)s, %(pattern)s)
ON CONFLICT (exchange, routing_key, queue) DO UPDATE SET pattern = EXCLUDED.pattern;

-- name: unbind
DELETE FROM {kombu_bindings} WHERE exchange = %(exchange)s AND routing_key = %(routing_key)s AND queue = %(queue)s;

-- name: table
-- The live bindings of an exchange.
SELECT b.routing_key, b.pattern, b.queue FROM {kombu_bindings} b
JOIN {kombu_queues} q ON q.name = b.queue
WHERE b.exchange = %(exchange)s AND (q.expires_at IS NULL OR q.expires_at > now());

-- name: fanout
-- One copy for every live transient queue bound to the exchange; the durable ones come
-- back, for the caller to store the message as a job in each.
WITH bound AS (
    SELECT q.name, q.transient, q.message_ttl, q.expires FROM {kombu_queues} q
    WHERE q.name IN (SELECT queue FROM {kombu_bindings} WHERE exchange = %(exchange)s)
      AND (q.expires_at IS NULL OR q.expires_at > now())
),
stored AS (
    INSERT INTO {kombu_messages} (queue, payload, expires_at)
    SELECT q.name, %(payload)s,
           now() + make_interval(secs => LEAST(COALESCE(q.message_ttl, q.expires), COALESCE(%(ttl)s::float8, 'infinity'::float8)))
    FROM bound q WHERE q.transient
    RETURNING queue
)
SELECT (SELECT count(pg_notify(%(channel)s, queue)) FROM (SELECT DISTINCT queue FROM stored) s),
       ARRAY(SELECT name FROM bound WHERE NOT transient);

-- name: put
-- Whether the queue is a transient one (a row, or none); a message is stored only while
-- the queue is alive.
WITH target AS (
    SELECT q.name, q.message_ttl, q.expires, (q.expires_at IS NULL OR q.expires_at > now()) AS alive
    FROM {kombu_queues} q WHERE q.name = %(queue)s AND q.transient
),
stored AS (
    INSERT INTO {kombu_messages} (queue, payload, expires_at)
    SELECT q.name, %(payload)s,
           now() + make_interval(secs => LEAST(COALESCE(q.message_ttl, q.expires), COALESCE(%(ttl)s::float8, 'infinity'::float8)))
    FROM target q WHERE q.alive
    RETURNING queue
)
SELECT TRUE, (SELECT count(pg_notify(%(channel)s, queue)) FROM stored) FROM target;

-- name: take
-- Take the oldest live message, and push the queue's expiry back once half of it is
-- spent (a write every expires/2 seconds, not one per read).
WITH taken AS (
    DELETE FROM {kombu_messages} WHERE id = ANY(ARRAY(
        SELECT id FROM {kombu_messages} WHERE queue = %(queue)s AND expires_at > now()
        ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED))
    RETURNING id, payload
),
kept AS (
    UPDATE {kombu_queues} SET expires_at = now() + make_interval(secs => expires)
    WHERE name = %(queue)s AND transient AND expires_at < now() + make_interval(secs => expires / 2)
)
SELECT id, payload FROM taken;

-- name: size
SELECT count(*) FROM {kombu_messages} WHERE queue = %(queue)s AND expires_at > now();

-- name: purge
WITH purged AS (DELETE FROM {kombu_messages} WHERE queue = %(queue)s RETURNING 1)
SELECT count(*) FROM purged;

-- name: prune
-- Remove up to %(batch)s expired messages, and queues a day past their expiry (the day
-- tells a late reply to a queue gone by from a message to an unknown queue); answers both
-- counts. Rows another consumer is removing are skipped, not waited for.
WITH messages AS (
    DELETE FROM {kombu_messages} WHERE id = ANY(ARRAY(
        SELECT id FROM {kombu_messages} WHERE expires_at <= now() LIMIT %(batch)s
        FOR UPDATE SKIP LOCKED))
    RETURNING 1
),
queues AS (
    DELETE FROM {kombu_queues} WHERE expires_at < now() - interval '1 day' RETURNING 1
)
SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM queues);
