"""Pure: what ``up`` must do to move what runs toward what the inventory asks for.

Desired processes come from ``spec.build``, recorded ones from the state file, and which of those
still run from the hosts. ``plan`` decides; ``up`` carries it out. On a cluster that already is what
the inventory asks for, the plan is empty: run ``up`` twice and the second run starts nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from clusterctl.spec import ProcessSpec
from clusterctl.state import ProcessRecord


@dataclass
class Plan:
    keep: list[ProcessSpec] = field(default_factory=list)
    start: list[ProcessSpec] = field(default_factory=list)
    stop: list[ProcessRecord] = field(default_factory=list)  # running but no longer wanted as they are
    drop: list[ProcessRecord] = field(default_factory=list)  # recorded but gone: forget them
    unknown: list[ProcessRecord] = field(default_factory=list)  # on hosts that cannot be reached
    detach: list[ProcessRecord] = field(default_factory=list)  # on unreachable hosts the inventory dropped

    @property
    def empty(self) -> bool:
        return not (self.start or self.stop or self.drop)


def plan(desired: Sequence[ProcessSpec], recorded: Sequence[ProcessRecord], alive: Mapping[str, bool],
         unreachable: Collection[str] = frozenset(), replace_all: bool = False) -> Plan:
    """Pure decision: what to keep, start, stop and forget. Hosts in ``unreachable`` are left alone;
    ``replace_all`` restarts every running process (new certificates)."""
    result = Plan()
    records = {r.name: r for r in recorded}
    for want in desired:
        record = records.get(want.name)
        if want.host.id in unreachable:
            if record is not None:
                result.unknown.append(record)
            continue
        if (record is not None and alive.get(record.name) and record.argv == list(want.argv)
                and record.settings == want.settings and not replace_all):
            result.keep.append(want)
            continue
        if record is not None:
            (result.stop if alive.get(record.name) else result.drop).append(record)
        result.start.append(want)
    if any(p.role == "scheduler" for p in result.start):
        # A new scheduler: a worker of the old one cannot join it (a Dask worker closes itself once
        # its scheduler connection breaks, perhaps only after this plan has kept it), so every
        # running worker is replaced too.
        for want in [k for k in result.keep if k.role == "worker"]:
            result.keep.remove(want)
            result.stop.append(records[want.name])
            result.start.append(want)
    wanted = {w.name for w in desired}
    wanted_hosts = {w.host.id for w in desired}
    for record in recorded:
        if record.name in wanted:
            continue
        if record.host in unreachable:
            (result.unknown if record.host in wanted_hosts else result.detach).append(record)
        else:
            (result.stop if alive.get(record.name) else result.drop).append(record)
    return result
