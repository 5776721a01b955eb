"""The cluster's hosts as a Fabric group, so that an existing fabfile's tasks run against them.

Each connection is made as clusterctl makes its own: the host's user, SSH port, identity file and
connect timeout from the recorded state, and its host key checked against the keys clusterctl
recorded (``$CLUSTERCTL_HOME/known_hosts``) and the user's ``~/.ssh/known_hosts``; a host whose key
is in neither is refused, never added (Fabric's own default accepts any key it has not seen). A host
behind a jump host (the inventory's ``jump``, or ``ProxyJump`` in ``~/.ssh/config``) gets that bastion
as its Fabric ``gateway``, made and checked the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clusterctl import state as states
from clusterctl.errors import ClusterctlError, UsageError
from clusterctl.inventory import Host
from clusterctl.state import ClusterState

ROLES = ("scheduler", "worker")


def host_ids(current: ClusterState, role: str | None = None) -> list[str]:
    """The ids of the hosts that run the cluster's processes (of ``role``), scheduler's first."""
    if role is not None and role not in ROLES:
        raise UsageError(f"role: must be one of {', '.join(ROLES)} or None (got {role!r})")
    ordered = sorted(current.processes, key=lambda r: r.role != "scheduler")
    return list(dict.fromkeys(r.host for r in ordered if role is None or r.role == role))


def group(current: ClusterState, role: str | None = None) -> Any:
    """A ``fabric.ThreadingGroup`` of the hosts of ``current`` (of ``role``)."""
    try:
        import fabric
        import paramiko
    except ImportError:
        raise ClusterctlError("fabric_group needs Fabric: pip install 'clusterctl[ops]'") from None
    ids = host_ids(current, role)
    if not ids:
        raise ClusterctlError(f"cluster {current.cluster} runs no {role or 'process'} on any host:"
                              " nothing to connect to (run 'clusterctl up' first)")
    connections = []
    for host_id in ids:
        host = current.host(host_id)
        if host.connection != "ssh":
            raise ClusterctlError(f"[{host_id}] is reached without SSH (connection: {host.connection});"
                                  " a Fabric group needs SSH hosts: use role= to leave it out")
        connections.append(_connection(fabric, paramiko, host))
    return fabric.ThreadingGroup.from_connections(connections)


def _connection(fabric: Any, paramiko: Any, host: Host, hops: int = 0) -> Any:
    """A ``fabric.Connection`` to the host, through its jump host's (``gateway``) if it has one."""
    from clusterctl.transport import jump

    bastion = jump.bastion(host)
    if bastion is not None and hops >= jump.MAX_HOPS:
        raise ClusterctlError(f"[{host.id}] its jump hosts form a loop or a chain of more than {jump.MAX_HOPS}:"
                              " check jump: in the inventory and ProxyJump in ~/.ssh/config")
    kwargs: dict[str, Any] = {}
    if host.identity_file:
        kwargs["key_filename"] = host.identity_file
    # Never None: that would let Fabric follow ~/.ssh/config's ProxyJump with its own key policy, where
    # jump.bastion has read it already (False: no gateway).
    gateway = _connection(fabric, paramiko, bastion, hops + 1) if bastion is not None else False
    conn = fabric.Connection(host.address, user=host.user, port=host.ssh_port, connect_kwargs=kwargs,
                             connect_timeout=host.connect_timeout, gateway=gateway)
    for known in (states.home() / "known_hosts", Path.home() / ".ssh" / "known_hosts"):
        if known.is_file():
            conn.client.load_host_keys(str(known))
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return conn
