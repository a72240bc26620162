"""The login throttle counts failures per (client address, user name), with the address
the server resolved: guessing from one address never locks a user out elsewhere, and
``X-Forwarded-For`` picks the address only when a configured proxy sends it."""

from __future__ import annotations

import pytest

from chancy import Chancy

from tests.dashboard.conftest import PASSWORD
from tests.dashboard.dashboard_process import client_from, dashboard_process

LIMIT = 5  # failed logins per client and name before the throttle answers


@pytest.fixture
async def migrated(dsn):
    app = Chancy(dsn)
    await app.migrate()
    await app.close()
    return dsn


async def login(client, forwarded_for: str | None = None, password: str = "wrong") -> int:
    headers = {"x-forwarded-for": forwarded_for} if forwarded_for else {}
    response = await client.post("/api/login", json={"username": "olga", "password": password}, headers=headers)
    return response.status_code if "Too many" not in response.text else 429


async def test_wrong_basic_passwords_from_one_address_never_lock_out_the_scraper(migrated, tmp_path):
    async with dashboard_process(migrated, tmp_path) as base, \
            client_from(base, "127.0.0.2") as attacker, client_from(base, "127.0.0.3") as scraper:
        guesses = [(await attacker.get("/metrics", auth=("olga", f"guess{n}"))).status_code for n in range(12)]
        scrape = await scraper.get("/metrics", auth=("olga", PASSWORD))
        assert scrape.status_code == 200 and "chancy_workers" in scrape.text
        assert (await scraper.get("/api/queues", auth=("olga", PASSWORD))).status_code == 200
        assert guesses == [401] * LIMIT + [429] * (12 - LIMIT)
        refused = await attacker.get("/metrics", auth=("olga", PASSWORD))  # even the right one, from there
        assert refused.status_code == 429 and refused.headers["retry-after"].isdigit()
        assert "Too many failed logins" in refused.json()["error"]
        # Hostile input over the real server: a clear 400, the connection kept.
        nul = await scraper.get("/api/jobs?queue=a%00b", auth=("olga", PASSWORD))
        assert nul.status_code == 400 and "NUL" in nul.json()["error"]


async def test_forwarded_for_from_a_client_that_is_no_proxy_is_ignored(migrated, tmp_path):
    async with dashboard_process(migrated, tmp_path) as base, client_from(base, "127.0.0.1") as local:
        answers = [await login(local, forwarded_for=f"10.0.0.{n}") for n in range(LIMIT + 3)]
        assert answers == [401] * LIMIT + [429] * 3
        assert await login(local, forwarded_for="10.9.9.9", password=PASSWORD) == 429


async def test_a_configured_proxy_gives_each_forwarded_client_its_own_budget(migrated, tmp_path):
    async with dashboard_process(migrated, tmp_path, "--forwarded-allow-ips", "127.0.0.1") as base, \
            client_from(base, "127.0.0.1") as proxy, client_from(base, "127.0.0.4") as stranger:
        assert [await login(proxy, forwarded_for="203.0.113.7") for _ in range(LIMIT + 1)] == [401] * LIMIT + [429]
        assert await login(proxy, forwarded_for="203.0.113.7", password=PASSWORD) == 429
        assert await login(proxy, forwarded_for="203.0.113.8", password=PASSWORD) == 200
        assert await login(proxy, forwarded_for="198.51.100.1") == 401  # a budget of its own
        # An address that is not a configured proxy cannot rotate its way past the limit.
        answers = [await login(stranger, forwarded_for=f"10.1.0.{n}") for n in range(LIMIT + 2)]
        assert answers == [401] * LIMIT + [429] * 2
