"""``reconcile.plan``: the pure decision of what to keep, start, stop, forget or leave alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from clusterctl.inventory import parse
from clusterctl.plan import Plan, plan
from clusterctl.spec import ProcessSpec, build
from clusterctl.state import ProcessRecord

INVENTORY = """\
defaults:
  python: /opt/py/bin/python
scheduler:
  host: s
workers:
  - host: w1
    nworkers: 2
  - host: w2
"""


def desired(text: str = INVENTORY) -> tuple[ProcessSpec, ...]:
    return build(parse(text, Path("/inv/c.yaml"))).processes


def record(p: ProcessSpec, pid: int = 100) -> ProcessRecord:
    """What `up` records for a process it started (argv a list, as after a JSON round trip)."""
    return ProcessRecord(name=p.name, role=p.role, host=p.host.id, python=p.python, dir=p.dir, pid=pid,
                         argv=list(p.argv), started_at=1.0)


def names(items) -> list[str]:
    return sorted(i.name for i in items)


@pytest.fixture
def want():
    procs = desired()
    assert [p.name for p in procs] == ["s-scheduler", "w1-worker-0", "w1-worker-1", "w2-worker-0"]
    return procs


def test_empty_state_starts_everything(want):
    p = plan(want, [], {})
    assert names(p.start) == names(want)
    assert p.keep == [] and p.stop == [] and p.drop == [] and p.unknown == []
    assert not p.empty


def test_all_alive_and_unchanged_keeps_everything(want):
    recs = [record(w, pid) for pid, w in enumerate(want, 100)]
    p = plan(want, recs, {r.name: True for r in recs})
    assert names(p.keep) == names(want)
    assert p.start == [] and p.stop == [] and p.drop == [] and p.unknown == []
    assert p.empty


def test_a_dead_worker_is_dropped_and_started_again(want):
    recs = [record(w) for w in want]
    alive = {r.name: True for r in recs} | {"w1-worker-1": False}
    p = plan(want, recs, alive)
    assert names(p.drop) == ["w1-worker-1"]
    assert p.drop[0] is recs[2]
    assert names(p.start) == ["w1-worker-1"]
    assert names(p.keep) == ["s-scheduler", "w1-worker-0", "w2-worker-0"]
    assert p.stop == [] and not p.empty


def test_a_worker_missing_from_the_probe_counts_as_dead(want):
    recs = [record(w) for w in want]
    alive = {r.name: True for r in recs if r.name != "w2-worker-0"}
    p = plan(want, recs, alive)
    assert names(p.drop) == ["w2-worker-0"] and names(p.start) == ["w2-worker-0"]


def test_changed_argv_while_alive_is_stopped_and_started(want):
    recs = [record(w) for w in want]
    changed = desired(INVENTORY.replace("    nworkers: 2\n", "    nworkers: 2\n    nthreads: 3\n"))
    p = plan(changed, recs, {r.name: True for r in recs})
    assert names(p.stop) == ["w1-worker-0", "w1-worker-1"]
    assert names(p.start) == ["w1-worker-0", "w1-worker-1"]
    assert all("--nthreads" in s.argv for s in p.start)
    assert names(p.keep) == ["s-scheduler", "w2-worker-0"]
    assert p.drop == [] and not p.empty


def test_changed_argv_of_a_dead_process_is_dropped_not_stopped(want):
    recs = [record(w) for w in want]
    changed = desired(INVENTORY.replace("python: /opt/py/bin/python", "python: /other/python"))
    alive = {r.name: r.name != "w2-worker-0" for r in recs}
    p = plan(changed, recs, alive)
    assert names(p.stop) == ["s-scheduler", "w1-worker-0", "w1-worker-1"]
    assert names(p.drop) == ["w2-worker-0"]
    assert names(p.start) == names(changed) and p.keep == []


def test_processes_no_longer_desired(want):
    recs = [record(w) for w in want]
    fewer = desired(INVENTORY.replace("    nworkers: 2\n", "").replace("  - host: w2\n", ""))
    assert [p.name for p in fewer] == ["s-scheduler", "w1-worker-0"]
    alive = {r.name: True for r in recs} | {"w2-worker-0": False}
    p = plan(fewer, recs, alive)
    assert names(p.stop) == ["w1-worker-1"]  # alive: stop it
    assert names(p.drop) == ["w2-worker-0"]  # dead: just forget it
    assert names(p.keep) == ["s-scheduler", "w1-worker-0"]
    assert p.start == [] and p.unknown == [] and not p.empty


def test_unreachable_host_is_left_alone(want):
    recs = [record(w) for w in want]
    # w1's processes are recorded but cannot be probed (no entry in alive); w2 is dead but reachable
    alive = {"s-scheduler": True, "w2-worker-0": False}
    p = plan(want, recs, alive, unreachable={"w1"})
    assert names(p.unknown) == ["w1-worker-0", "w1-worker-1"]
    assert not any(s.host.id == "w1" for s in p.start)
    assert not any(r.host == "w1" for r in p.stop + p.drop)
    assert names(p.keep) == ["s-scheduler"]
    assert names(p.drop) == ["w2-worker-0"] and names(p.start) == ["w2-worker-0"]


def test_unreachable_host_that_has_nothing_recorded_gets_nothing_started(want):
    p = plan(want, [], {}, unreachable={"w1"})
    assert names(p.start) == ["s-scheduler", "w2-worker-0"]
    assert p.unknown == [] and p.stop == [] and p.drop == []


def test_process_of_an_unreachable_host_the_inventory_dropped_is_detached(want):
    recs = [record(w) for w in want]
    fewer = desired(INVENTORY.replace("  - host: w2\n", ""))
    alive = {r.name: True for r in recs}
    p = plan(fewer, recs, alive, unreachable={"w2"})
    # Set aside (kept in the state, stopped when the host answers), not a process of the cluster.
    assert names(p.detach) == ["w2-worker-0"] and p.unknown == []
    assert p.stop == [] and p.drop == [] and p.start == []
    assert p.empty


def test_undesired_process_on_an_unreachable_host_still_listed_is_unknown(want):
    recs = [record(w) for w in want]
    extra = ProcessRecord(**{**record(want[3]).__dict__, "name": "w2-worker-9"})
    alive = {r.name: True for r in recs + [extra]}
    p = plan(want, recs + [extra], alive, unreachable={"w2"})
    assert "w2-worker-9" in names(p.unknown) and p.detach == []


def test_plan_does_not_mutate_its_inputs(want):
    recs = [record(w) for w in want]
    alive = {r.name: False for r in recs}
    before = ([r.name for r in recs], dict(alive))
    plan(want, recs, alive, unreachable={"w2"})
    assert ([r.name for r in recs], alive) == before


def test_empty_plan_property():
    assert Plan().empty
    assert Plan(keep=[object()], unknown=[object()]).empty
    assert not Plan(drop=[object()]).empty
    assert not Plan(stop=[object()]).empty
    assert not Plan(start=[object()]).empty


def test_a_new_scheduler_replaces_the_running_workers(want):
    # A Dask worker closes itself once its scheduler is gone: those still running when up looks
    # (they have not noticed yet) cannot join the new scheduler, so they are replaced too.
    recs = [record(w) for w in want]
    alive = {r.name: True for r in recs} | {"s-scheduler": False}
    p = plan(want, recs, alive)
    assert names(p.drop) == ["s-scheduler"]
    assert names(p.stop) == ["w1-worker-0", "w1-worker-1", "w2-worker-0"]
    assert names(p.start) == names(want) and p.keep == []


def test_a_new_scheduler_leaves_workers_on_unreachable_hosts_alone(want):
    recs = [record(w) for w in want]
    alive = {"s-scheduler": False, "w2-worker-0": True}
    p = plan(want, recs, alive, unreachable={"w1"})
    assert names(p.unknown) == ["w1-worker-0", "w1-worker-1"]
    assert names(p.stop) == ["w2-worker-0"] and names(p.start) == ["s-scheduler", "w2-worker-0"]
