"""The one password masker: every way a DSN or a message can carry a password, including
strings psycopg cannot parse."""

from __future__ import annotations

import pytest

from chancy.redaction import redact

SECRET = "s3cret-Zq9"


@pytest.mark.parametrize("text, masked", [
    (f"postgresql://u:{SECRET}@h:5432/db", "postgresql://u:***@h:5432/db"),
    (f"postgresql://u:p@ss/{SECRET}@h/db", "postgresql://u:***@h/db"),
    (f"u:{SECRET}@h/db", "u:***@h/db"),
    (f"postgresql://u@h/db?sslmode=require&password={SECRET}&application_name=x",
     "postgresql://u@h/db?sslmode=require&password=***&application_name=x"),
    (f"host=h password = '{SECRET} \\' x' port=1", "host=h password = *** port=1"),
    (f"host=h sslpassword={SECRET} PGPASSWORD={SECRET}", "host=h sslpassword=*** PGPASSWORD=***"),
    ("postgresql://u@h:5432/db", "postgresql://u@h:5432/db"),
    ("password authentication failed for user \"u\"", "password authentication failed for user \"u\""),
])
def test_redact_masks_every_form_of_password(text, masked):
    assert redact(text) == masked
    assert redact(masked) == masked


def test_redact_masks_a_known_password_quoted_alone():
    dsn = f"postgresql://u:{SECRET}%zz@h/db"
    assert redact(f'invalid percent-encoded token: "{SECRET}%zz"', dsn) == 'invalid percent-encoded token: "***"'
