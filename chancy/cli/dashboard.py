"""``chancy dashboard``: serve the web console, JSON API and /metrics of an app."""

from __future__ import annotations

import click

from chancy.cli.common import CliError, ExitCode, Target, target_options
from chancy.dashboard.server import DEFAULT_HOST, DEFAULT_PORT


@click.command()
@target_options
@click.option("--host", default=DEFAULT_HOST, show_default=True,
              help="Address to listen on (anything but localhost: put a TLS proxy in front).")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(1, 65535))
@click.option("--users", "users_file", type=click.Path(dir_okay=False), envvar="CHANCY_DASHBOARD_USERS",
              help="File of 'name:role:hash' lines, role viewer or operator [env CHANCY_DASHBOARD_USERS].")
@click.option("--secure-cookies/--no-secure-cookies", default=None,
              help="Force the session cookie's Secure flag [default: when the request came over HTTPS].")
@click.option("--forwarded-allow-ips", default="", metavar="ADDRESSES",
              help="Proxies (comma-separated addresses or networks) whose X-Forwarded-Proto/-For "
                   "headers are trusted, e.g. 127.0.0.1 for a proxy on this machine [default: none].")
@click.option("--root-path", default="", metavar="PREFIX",
              help="Public path prefix a reverse proxy strips, e.g. /chancy.")
@click.option("--hash-password", "hash_only", is_flag=True,
              help="Ask for a password, print its hash for the users file, and exit.")
def dashboard(target: Target, host: str, port: int, users_file: str | None, secure_cookies: bool | None,
              forwarded_allow_ips: str, root_path: str, hash_only: bool) -> None:
    """Serve the dashboard (web UI, JSON API under /api, Prometheus /metrics).

    Needs pip install "chancy[dashboard]" and a users file; make its lines with
    `chancy dashboard --hash-password`, e.g. `alice:operator:<hash>`."""
    from chancy.dashboard.auth import hash_password, load_users

    if hash_only:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
        click.echo(hash_password(password))
        return
    if not users_file:
        raise CliError("Give --users FILE (or CHANCY_DASHBOARD_USERS): nothing is served without a login. "
                       "Make lines with `chancy dashboard --hash-password`.", ExitCode.USAGE)
    from chancy.dashboard.server import serve

    users = load_users(users_file)
    target.require_schema()
    serve(target.app, host, port, users=users, forwarded_allow_ips=forwarded_allow_ips, root_path=root_path,
          secure_cookies=secure_cookies)
