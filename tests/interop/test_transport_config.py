"""How the transport reads its connection URL and options (no broker traffic)."""

from __future__ import annotations

import pytest
from kombu import Connection

from chancy.compat.kombu import Transport


@pytest.mark.parametrize(("url", "dsn"), [
    # The chancy+ form keeps the whole libpq DSN, query parameters included.
    ("chancy+postgresql://u@/app?host=/tmp/sock&sslmode=disable", "postgresql://u@/app?host=/tmp/sock&sslmode=disable"),
    ("chancy+postgres://u:p@db:5433/app", "postgresql://u:p@db:5433/app"),
])
def test_chancy_url_keeps_the_whole_dsn(url, dsn):
    assert Connection(url).transport.dsn == dsn


def test_transport_class_with_a_plain_url():
    """``broker_transport='chancy.compat.kombu:Transport'`` with a plain URL: kombu splits
    it into parts, which are put back together."""
    connection = Connection("postgresql://u:p@db:5433/app", transport=Transport)
    assert connection.transport.dsn == "host=db port=5433 user=u password=p dbname=app"


def test_the_alias_is_registered_at_import():
    from kombu.transport import TRANSPORT_ALIASES

    assert TRANSPORT_ALIASES["chancy"] == "chancy.compat.kombu:Transport"


@pytest.mark.parametrize("options", [{"heartbeat_interval": 0}, {"heartbeat_interval": 5, "consumer_timeout": 8}])
def test_liveness_options_are_checked(options):
    with pytest.raises(ValueError, match="consumer_timeout > 2 \\* heartbeat_interval"):
        Connection("chancy+postgresql://u@db/app", transport_options=options).transport  # noqa: B018


def test_accept_content_naming_a_missing_serializer_is_a_clear_error():
    from chancy.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="accept_content lists \\['no-such-codec'\\]"):
        Connection("chancy+postgresql://u@db/app", transport_options={"accept_content": ["no-such-codec"]}).transport  # noqa: B018
