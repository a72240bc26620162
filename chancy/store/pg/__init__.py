"""The Postgres store: pools and connections, statements (``sql/*.sql``) and the code
that runs them."""
