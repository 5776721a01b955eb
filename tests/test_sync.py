"""`clusterctl sync`: this machine's package versions on every host, from wheels downloaded here once
and copied over SSH (the lab hosts have no internet), then used by `up`."""

from __future__ import annotations

import time

import pytest

from clusterctl import sync
from clusterctl.errors import UsageError
from conftest import clean, dask_processes


def test_pins_are_the_versions_installed_here_with_everything_they_need():
    from importlib.metadata import version

    pinned = sync.pins(["scikit-learn"])
    for name in ("dask", "distributed", "bokeh", "tornado", "msgpack", "scikit-learn", "scipy", "numpy"):
        assert pinned[name] == version(name), name
    assert "pytest" not in pinned and "xgboost-cpu" not in pinned  # only what the cluster needs
    with pytest.raises(UsageError, match="not-a-package-here is not installed here"):
        sync.pins(["not-a-package-here"])


def test_the_environment_key_changes_with_the_pins_and_the_kind_of_host():
    facts = {"python": "3.11", "platform": "linux-x86_64", "libc": ["glibc", "2.36"], "machine": "x86_64",
             "implementation": "cpython"}
    pinned = {"dask": "2026.8.0", "distributed": "2026.8.0"}
    key = sync.env_key(pinned, facts)
    assert key == sync.env_key(dict(reversed(pinned.items())), facts)
    assert key != sync.env_key({**pinned, "dask": "2026.7.0"}, facts)
    assert key != sync.env_key(pinned, {**facts, "python": "3.12"})
    tags = sync.platform_tags(facts)
    assert tags[0] == "manylinux_2_36_x86_64" and "manylinux_2_17_x86_64" in tags and "manylinux2014_x86_64" in tags
    assert tags[-1] == "linux_x86_64"


@pytest.mark.lab
@pytest.mark.slow  # among the slowest lab tests (~30-45 s): make test and CI run it
def test_sync_fixes_a_host_with_another_dask_and_a_second_sync_does_nothing(
        lab, ssh_cli, write_inventory, old_dask_python):
    odd = lab.hosts[3]
    inv = write_inventory([lab.hosts[1].addr], name="sync",
                          extra_worker=f"  - host: {odd.addr}\n    python: {old_dask_python}\n")
    refused = ssh_cli("up", inv)
    assert refused.code == 3 and f"[{odd.addr}] dask 2024.8.0 differs from the client's" in refused.err
    assert "'clusterctl sync INVENTORY' installs the client's versions there" in refused.err
    assert clean(lab, lab.hosts, cluster="sync")
    first = ssh_cli("sync", inv, "--json", timeout=900)
    assert first.code == 0, first.out + first.err
    rows = {r["host"]: r for r in first.json["rows"]}
    assert set(rows) == {lab.hosts[0].addr, lab.hosts[1].addr, odd.addr}
    assert all(r["status"] in ("created", "present") and "/envs/" in r["python"] for r in rows.values()), rows
    assert first.json["pins"]["dask"] != "2024.8.0"
    try:
        up = ssh_cli("up", inv)
        assert up.code == 0, up.out + up.err
        running = dask_processes(lab, odd, "sync")
        assert running and all(cmd.split()[0] == rows[odd.addr]["python"] for cmd in running), running
        started = time.monotonic()
        again = ssh_cli("sync", inv, "--json")
        took = time.monotonic() - started
        assert again.code == 0 and {r["status"] for r in again.json["rows"]} == {"present"}, again.out
        assert all(r["seconds"] < 1 for r in again.json["rows"]) and took < 10, (took, again.out)
        assert ssh_cli("status", "--cluster", "sync").code == 0
    finally:
        assert ssh_cli("down", "--cluster", "sync").code == 0
    assert clean(lab, lab.hosts, cluster="sync")
