-- Statements about the server itself, not an app's tables: the databases of a server
-- (tests, benchmarks and the embedded server make and drop them through a superuser
-- DSN) and what the CLI reports about the server. {database} and {template} are
-- database names, filled in as quoted identifiers.

-- name: create_database
CREATE DATABASE {database}

-- name: create_database_from_template
-- A copy of a migrated template: much faster than migrating each new database.
CREATE DATABASE {database} TEMPLATE {template}

-- name: drop_database
-- Its sessions are ended first (Postgres 13+).
DROP DATABASE IF EXISTS {database} WITH (FORCE)

-- name: server_version
SHOW server_version

-- name: data_directory
-- Superusers (and pg_read_all_settings) only.
SHOW data_directory
