"""The hosts a command acts on: those of an inventory (the cluster need not be up) or of a running
cluster's state, narrowed by host names and a role. ``exec``, ``setup``, ``doctor`` and ``logs``
select with the same rules."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from clusterctl import spec as specs
from clusterctl.errors import UsageError
from clusterctl.inventory import PLACEHOLDER_RE, Host, Inventory
from clusterctl.state import ClusterState

ROLES = ("scheduler", "worker")


@dataclass
class Target:
    host: Host
    python: str
    root: str  # the cluster's folder on the host
    roles: list[str] = field(default_factory=list)
    setup: list[str] = field(default_factory=list)


def from_inventory(inv: Inventory) -> list[Target]:
    cluster = specs.build(inv)
    out: dict[str, Target] = {}
    for p in cluster.processes:
        t = out.setdefault(p.host.id, Target(p.host, p.python, p.root, setup=list(inv.setup)))
        if p.role not in t.roles:
            t.roles.append(p.role)
    return list(out.values())


def from_state(current: ClusterState) -> list[Target]:
    """The hosts of the cluster's processes (not of processes set aside on hosts it dropped)."""
    out: dict[str, Target] = {}
    for r in current.processes:
        t = out.setdefault(r.host, Target(current.host(r.host), current.python(r.host), current.roots[r.host]))
        if r.role not in t.roles:
            t.roles.append(r.role)
    return [out[h] for h in current.hosts if h in out]


def select(targets: list[Target], names: list[str] | None, role: str | None, label: str = "--hosts") -> list[Target]:
    """The targets named (by host id or address; all if ``names`` is None) that have ``role``; an
    unknown name or role is a usage error. ``label`` names the option in messages."""
    if role is not None and role not in ROLES:
        raise UsageError(f"--role: expected one of {', '.join(ROLES)}, got {role!r}")
    chosen = targets
    if names:
        known = {t.host.id: t for t in targets} | {t.host.address: t for t in targets}
        missing = [n for n in names if n not in known]
        if missing:
            raise UsageError(f"{label}: {', '.join(missing)} not in this cluster (its hosts are:"
                             f" {', '.join(t.host.id for t in targets)})")
        wanted = {known[n].host.id for n in names}
        chosen = [t for t in chosen if t.host.id in wanted]
    if role is not None:
        chosen = [t for t in chosen if role in t.roles]
    if not chosen:
        raise UsageError(f"no host matches {label}/--role")
    return chosen


def expand(command: str, target: Target) -> str:
    """``{python}`` and ``{workdir}`` in a command, replaced by the host's (shell-quoted). One pass
    over the command: a value is never searched again, so a ``{workdir}`` inside the python path
    stays text instead of being replaced inside the quotes around it."""
    values = {"python": target.python, "workdir": target.root}
    return PLACEHOLDER_RE.sub(lambda m: shlex.quote(values[m.group(1)]), command)
