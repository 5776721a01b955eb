"""exec / setup / doctor: the pure parts (inventory `setup:`, host selection, placeholders) and their
bad input through the real CLI; the commands themselves run on the SSH lab in test_ops.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from clusterctl import inventory, targets
from clusterctl.errors import InventoryError, UsageError

BASE = """name: o
defaults: {connection: local, workdir: /tmp/ops-unit}
scheduler: {host: 127.0.0.1, port: 8960, dashboard_port: 8961}
workers:
  - {host: 127.0.0.1}
  - {host: 127.0.0.2}
"""


def load(tmp_path: Path, top: str = "") -> inventory.Inventory:
    path = tmp_path / "inv.yaml"
    path.write_text(top + BASE)
    return inventory.load(path)


def test_setup_commands_are_read_in_order(tmp_path):
    inv = load(tmp_path, 'setup:\n  - "{python} -m pip --version"\n  - mkdir -p /srv\n')
    assert inv.setup == ("{python} -m pip --version", "mkdir -p /srv")
    assert load(tmp_path).setup == ()


@pytest.mark.parametrize("top, field", [
    ("setup: pip install dask\n", "setup"),  # a string, not a list
    ('setup:\n  - ""\n', "setup[0]"),
    ('setup:\n  - ok\n  - "bad\\u0000nul"\n', "setup[1]"),
    ("setup:\n  - [nested]\n", "setup[0]"),
])
def test_bad_setup_names_its_line_and_field(tmp_path, top, field):
    with pytest.raises(InventoryError) as err:
        load(tmp_path, top)
    assert any(f"inv.yaml:{n}: {field}:" in d for d in err.value.details for n in (1, 2, 3))


def test_targets_are_hosts_not_processes_and_selection(tmp_path):
    found = targets.from_inventory(load(tmp_path, "setup:\n  - 'true'\n"))
    assert [(t.host.id, t.roles) for t in found] == [("127.0.0.1", ["scheduler", "worker"]),
                                                     ("127.0.0.2", ["worker"])]
    assert all(t.root == "/tmp/ops-unit/o/" and t.setup == ["true"] for t in found)
    assert [t.host.id for t in targets.select(found, None, "scheduler")] == ["127.0.0.1"]
    assert [t.host.id for t in targets.select(found, ["127.0.0.2"], "worker")] == ["127.0.0.2"]
    with pytest.raises(UsageError, match="127.0.0.9 not in this cluster"):
        targets.select(found, ["127.0.0.9"], None)
    with pytest.raises(UsageError, match="--role"):
        targets.select(found, None, "nanny")
    with pytest.raises(UsageError, match="no host matches"):
        targets.select(found, ["127.0.0.2"], "scheduler")


def test_placeholders_are_shell_quoted(tmp_path):
    t = targets.from_inventory(load(tmp_path))[0]
    t.python = "/opt/my env/python"
    assert targets.expand("{python} -m pip list; ls {workdir}", t) == "'/opt/my env/python' -m pip list; ls /tmp/ops-unit/o/"


def test_exec_and_doctor_without_a_cluster_and_setup_without_commands(cli, tmp_path):
    for command in (["exec", "--", "true"], ["doctor"]):
        result = cli(*command)
        assert result.code == 1 and "no cluster is up" in result.err, result.err  # as for status
    path = tmp_path / "inv.yaml"
    path.write_text(BASE)
    result = cli("setup", path)
    assert result.code == 0 and "no 'setup:' commands; nothing to do" in result.out
    bad = cli("exec", "--inventory", path, "--role", "nanny", "--", "true")
    assert bad.code == 2 and "--role" in bad.err
