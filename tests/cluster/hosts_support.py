"""Hosts of one machine for the many-hosts tests: each a network namespace linked to this
(root) namespace by its own veth pair and subnet, so the database sees a distinct client
address per host, and a host can be cut off (its link downed: packets vanish, nothing is
reset, as when a machine drops off the network) and brought back.

Needs root and iproute2 (``ip netns``); :func:`unavailable_reason` says why not otherwise."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def unavailable_reason() -> str | None:
    """None if this machine can create network namespaces, else why not."""
    if shutil.which("ip") is None:
        return "no `ip` command (Debian: apt-get install iproute2)"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"chancy-probe-{uuid.uuid4().hex[:6]}"
    try:
        _ip("netns", "add", probe)
    except subprocess.CalledProcessError as exc:
        return f"`ip netns add` failed: {exc.stderr.strip()}"
    _ip("netns", "del", probe)
    return None


@dataclass(frozen=True)
class Host:
    """``address``: this host's own; ``gateway``: the root namespace's end of its link, the
    address it reaches the database's machine at."""

    name: str
    namespace: str
    link: str
    address: str
    gateway: str

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]


class Hosts:
    """Creates hosts on demand; :meth:`close` removes every namespace and link it made."""

    def __init__(self) -> None:
        self._tag = uuid.uuid4().hex[:5]
        # A /16 of its own per run, so two runs on one machine never share routes.
        self._net = f"10.{100 + os.getpid() % 150}"
        self.hosts: list[Host] = []

    @property
    def network(self) -> str:
        """Every host's subnet, as one CIDR (for the database's access rules)."""
        return f"{self._net}.0.0/16"

    def add(self, name: str) -> Host:
        index = len(self.hosts) + 1
        namespace, link, peer = f"chy-{self._tag}-{index}", f"chy{self._tag}{index}", f"chy{self._tag}{index}p"
        gateway, address = f"{self._net}.{index}.1", f"{self._net}.{index}.2"
        _ip("netns", "add", namespace)
        host = Host(name, namespace, link, address, gateway)
        self.hosts.append(host)
        _ip("link", "add", link, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", namespace)
        _ip("addr", "add", f"{gateway}/24", "dev", link)
        _ip("link", "set", link, "up")
        _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", peer)
        _ip("-n", namespace, "link", "set", peer, "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        return host

    def cut(self, host: Host) -> None:
        """Down the host's link: its packets are dropped silently, its sockets stay open."""
        _ip("link", "set", host.link, "down")

    def restore(self, host: Host) -> None:
        _ip("link", "set", host.link, "up")

    def close(self) -> None:
        for host in self.hosts:
            subprocess.run(["ip", "link", "del", host.link], capture_output=True)
            subprocess.run(["ip", "netns", "del", host.namespace], capture_output=True)
        self.hosts.clear()
