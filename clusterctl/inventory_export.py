"""Pure: an inventory written out for other tools (``clusterctl inventory export``).

``json``: the validated inventory with every default filled in, as clusterctl reads it.
``ansible``: an Ansible YAML inventory: groups ``scheduler`` and ``workers`` (a host may be in both),
each host under its clusterctl id with ``ansible_host``, ``ansible_port``, ``ansible_user``,
``ansible_ssh_private_key_file`` and ``ansible_python_interpreter`` where the inventory sets them,
a jump host as ``ansible_ssh_common_args: -o ProxyJump=...`` (OpenSSH logs into the jump host with
its own ~/.ssh/config and agent, not the host's key file), and the Dask settings as ``clusterctl_*``
host variables.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from clusterctl.inventory import Host, Inventory

FORMATS = ("json", "ansible")


def as_json(inv: Inventory) -> dict[str, Any]:
    return dataclasses.asdict(inv)


def _connection(host: Host, python: str) -> dict[str, Any]:
    out: dict[str, Any] = {"ansible_host": host.address}
    if host.connection == "local":
        out["ansible_connection"] = "local"
    if host.ssh_port is not None:
        out["ansible_port"] = host.ssh_port
    if host.user is not None:
        out["ansible_user"] = host.user
    if host.identity_file is not None:
        out["ansible_ssh_private_key_file"] = host.identity_file
    if host.jump is not None:
        out["ansible_ssh_common_args"] = f"-o ProxyJump={host.jump}"
    out["ansible_python_interpreter"] = python
    return out


def as_ansible(inv: Inventory) -> dict[str, Any]:
    s = inv.scheduler
    scheduler = {s.host.id: _connection(s.host, s.python) | {
        "clusterctl_workdir": s.workdir, "clusterctl_port": s.port, "clusterctl_dashboard_port": s.dashboard_port}}
    workers: dict[str, dict[str, Any]] = {}
    for group in inv.workers:
        workers[group.host.id] = _connection(group.host, group.python) | {
            "clusterctl_workdir": group.workdir, "clusterctl_nworkers": group.nworkers,
            "clusterctl_nthreads": group.nthreads, "clusterctl_memory_limit": group.memory_limit,
            "clusterctl_nanny": group.nanny}
    return {"all": {"vars": {"clusterctl_cluster": inv.name},
                    "children": {"scheduler": {"hosts": scheduler}, "workers": {"hosts": workers}}}}


def export(inv: Inventory, fmt: str) -> dict[str, Any]:
    return {"json": as_json, "ansible": as_ansible}[fmt](inv)
