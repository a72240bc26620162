-- description: celery transport: exchange bindings, transient queues and their messages

-- name: kombu_queues
-- Queues a kombu client declared or bound: a transient one (auto_delete, exclusive or
-- expiring: remote-control, reply, event and rpc result queues) holds raw messages in
-- kombu_messages, never jobs; it lives until expires_at, pushed back while a consumer
-- reads it (NULL: a durable queue, for good).
CREATE TABLE {kombu_queues} (
    name text PRIMARY KEY,
    transient boolean NOT NULL,
    message_ttl float8 CHECK (message_ttl > 0),
    expires float8 CHECK (expires > 0),
    expires_at timestamptz
);

-- name: kombu_queues_expiry
CREATE INDEX {kombu_queues_expiry} ON {kombu_queues} (expires_at) WHERE expires_at IS NOT NULL;

-- name: kombu_bindings
-- Bindings seen by every process, so a fanout or a reply reaches queues that other
-- processes declared. pattern: a topic exchange's regular expression.
CREATE TABLE {kombu_bindings} (
    exchange text NOT NULL,
    routing_key text NOT NULL,
    queue text NOT NULL REFERENCES {kombu_queues} (name) ON DELETE CASCADE,
    pattern text,
    PRIMARY KEY (exchange, routing_key, queue)
);

-- name: kombu_messages
-- A message of a transient queue: taken (deleted) by one read, gone at expires_at.
CREATE TABLE {kombu_messages} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue text NOT NULL,
    payload text NOT NULL,
    expires_at timestamptz NOT NULL
);

-- name: kombu_messages_queue
CREATE INDEX {kombu_messages_queue} ON {kombu_messages} (queue, id);

-- name: kombu_messages_expiry
CREATE INDEX {kombu_messages_expiry} ON {kombu_messages} (expires_at);
