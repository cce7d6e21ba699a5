"""A network namespace joined to this one by a veth pair: a link a test can cut and restore.

:func:`isolated_namespace` creates a namespace and a veth pair with private addresses of a /30
(``10.254.N.1`` on this side, ``.2`` inside), unique names per run, and removes both when the
block ends, also on failure. A process started under :attr:`Namespace.prefix` (``ip netns exec
NAME``) reaches this side only through the pair; services it must reach listen on
:attr:`Namespace.host`. :meth:`Namespace.down` takes this side's end down: packets from the
namespace are dropped, open connections hang (a partition, not a refused connection).

Needs root and the ``ip`` binary (iproute2); a test skips without them, and fails in CI
(tests/_needs.py).
"""

from __future__ import annotations

import ipaddress
import os
import random
import secrets
import shutil
import subprocess
from contextlib import contextmanager
from typing import TYPE_CHECKING

import attrs

from tests._needs import missing

if TYPE_CHECKING:
    from collections.abc import Iterator


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


@attrs.frozen
class Namespace:
    """A namespace ``name`` whose link ``veth`` (this side: ``host``) can go down and up."""

    name: str
    veth: str
    host: str
    inside: str

    @property
    def prefix(self) -> list[str]:
        """The command prefix running a program inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def down(self) -> None:
        """Cut the link (this side's end down: the namespace's packets go nowhere)."""
        _ip("link", "set", self.veth, "down")

    def up(self) -> None:
        """Restore the link."""
        _ip("link", "set", self.veth, "up")


def _free_subnet() -> ipaddress.IPv4Network:
    used = _ip("-4", "-o", "addr").stdout
    for _ in range(100):
        net = ipaddress.IPv4Network(f"10.254.{random.randrange(256)}.{4 * random.randrange(64)}/30")
        if not any(f" {host}/" in used for host in net.hosts()):
            return net
    raise RuntimeError("no free /30 in 10.254.0.0/16")


@contextmanager
def isolated_namespace() -> Iterator[Namespace]:
    """A fresh namespace with a veth pair to this one; removed at the end of the block."""
    if shutil.which("ip") is None:
        missing("needs the ip binary (iproute2) to make a network namespace")
    if os.geteuid() != 0:
        missing("needs root to make a network namespace (ip netns add)")
    tag = secrets.token_hex(4)
    net = _free_subnet()
    first, second = list(net.hosts())
    ns = Namespace(f"arkor-{tag}", f"ak{tag}h", str(first), str(second))
    inner = f"ak{tag}n"
    try:
        _ip("netns", "add", ns.name)
        _ip("link", "add", ns.veth, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", ns.name)
        _ip("addr", "add", f"{first}/30", "dev", ns.veth)
        _ip("link", "set", ns.veth, "up")
        inside = ["netns", "exec", ns.name, "ip"]
        _ip(*inside, "addr", "add", f"{second}/30", "dev", inner)
        _ip(*inside, "link", "set", inner, "up")
        _ip(*inside, "link", "set", "lo", "up")
        yield ns
    finally:
        _ip("netns", "del", ns.name, check=False)  # takes its end of the pair with it
        _ip("link", "del", ns.veth, check=False)  # gone already unless the move failed
