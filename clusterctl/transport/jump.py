"""The jump host (bastion) a host is reached through: the inventory's ``jump``, else the ``ProxyJump``
that ``~/.ssh/config`` gives the host, read as OpenSSH reads it.

A bastion is a ``Host`` of its own, so that the pool opens one connection to it for every host behind
it and checks its host key by the same rules. In a chain (``a,b``: a first, then b through it) the
last hop is the bastion and the hops before it are its own jump; the first hop's own ``ProxyJump`` in
``~/.ssh/config`` counts, as in OpenSSH.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path

from clusterctl.errors import ConnectError
from clusterctl.inventory import JUMP_NONE, Host, split_jump

MAX_HOPS = 8


def config_file() -> Path:
    return Path(os.path.expanduser("~")) / ".ssh" / "config"


def config_jump(host: Host) -> str | None:
    """The ProxyJump of ``~/.ssh/config`` for the host (None: none, or ``ProxyJump none``)."""
    path = config_file()
    if not os.access(path, os.R_OK):
        return None
    import asyncssh
    from asyncssh.config import SSHClientConfig

    try:
        config = SSHClientConfig.load(None, [path], False, False, False, getpass.getuser(),
                                      host.user or (), host.address, host.ssh_port or ())
    except (OSError, asyncssh.Error, ValueError) as exc:  # ConfigParseError is a ValueError
        raise ConnectError(f"[{host.id}] cannot read {path}: {exc}; fix it, or set jump: in the"
                           " inventory") from None
    value = config.get("ProxyJump")
    return str(value) if value else None


def bastion(host: Host) -> Host | None:
    """The host that ``host`` is reached through, or None when it is reached directly."""
    if host.connection != "ssh" or host.jump == JUMP_NONE:
        return None
    spec = host.jump if host.jump is not None else config_jump(host)
    if not spec:
        return None
    try:
        hops = split_jump(spec)
    except ValueError as exc:  # only ~/.ssh/config can get here: the inventory's is checked at load
        raise ConnectError(f"[{host.id}] ProxyJump {spec!r} of {config_file()}: {exc}") from None
    user, address, port = hops[-1]
    before = ",".join(h.strip() for h in spec.split(",")[:-1])
    return Host(address=address, ssh_port=port, user=user, identity_file=host.identity_file,
                connect_timeout=host.connect_timeout, jump=before or None)


def where(host: Host) -> str:
    """``user@address port N`` as messages name a host."""
    user = f"{host.user}@" if host.user else ""
    port = f" port {host.ssh_port}" if host.ssh_port else ""
    return f"{user}{host.address}{port}"
