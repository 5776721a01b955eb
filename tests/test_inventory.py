"""The inventory loader: what a good file turns into, and how a bad one is reported.

The bad-input contract: one ``InventoryError`` (exit code 2) whose ``details`` list every problem
of the file at once, each as ``FILE:LINE: FIELD: message`` with the line the problem is on.
"""

from __future__ import annotations

import getpass
import os
import re
import sys
from pathlib import Path

import pytest

from clusterctl import inventory
from clusterctl.errors import BAD_INPUT, InventoryError

REPO = Path(__file__).resolve().parents[1]

DETAIL = re.compile(r"^(?P<file>.+?):(?P<line>\d+): (?P<field>[^:]+): (?P<msg>.+)$")


def write(tmp_path: Path, text: str, name: str = "inv.yaml") -> Path:
    """Write the text as given: line 1 of the string is line 1 of the file."""
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path: Path) -> InventoryError:
    with pytest.raises(InventoryError) as info:
        inventory.load(path)
    assert info.value.exit_code == BAD_INPUT
    return info.value


def problems(path: Path) -> list[tuple[int, str, str]]:
    """(line, field, message) of every detail, checking each has the FILE:LINE: FIELD: form."""
    err = error_of(path)
    assert err.details, err.message
    out = []
    for detail in err.details:
        m = DETAIL.match(detail)
        assert m, f"detail not in FILE:LINE: FIELD: message form: {detail!r}"
        assert m["file"] == str(path), detail
        out.append((int(m["line"]), m["field"], m["msg"]))
    n = len(err.details)
    assert err.message.startswith(f"{path}: {n} problem"), err.message
    return out


def where(found: list[tuple[int, str, str]]) -> set[tuple[int, str]]:
    return {(line, field) for line, field, _ in found}


# -- good files -------------------------------------------------------------------------------


def test_example_inventory_loads(tmp_path, monkeypatch):
    # example.yaml names ~/.ssh/id_ed25519, which must be readable: give it a home that has one.
    monkeypatch.setenv("HOME", str(tmp_path))
    key = tmp_path / ".ssh" / "id_ed25519"
    key.parent.mkdir()
    key.write_text("not really a key\n")

    inv = inventory.load(REPO / "inventory" / "example.yaml")

    assert inv.name == "example"
    assert inv.path == str((REPO / "inventory" / "example.yaml").resolve())
    s = inv.scheduler
    assert (s.host.address, s.port, s.dashboard_port) == ("10.1.1.93", 8786, 8787)
    assert s.host.ssh_port == 22 and s.host.user == "root" and s.host.connection == "ssh"
    assert s.host.identity_file == str(key)
    assert s.python == "/opt/venv/bin/python" and s.workdir == "/tmp/clusterctl-root"  # the SSH user's
    assert [w.host.address for w in inv.workers] == [f"10.1.1.{i}" for i in range(94, 99)]
    assert [w.nthreads for w in inv.workers] == [8, None, None, None, None]
    for w in inv.workers:
        assert w.nworkers == 1 and w.memory_limit == "auto" and w.nanny is True
        assert w.host.ssh_port == 22 and w.host.user == "root" and w.host.identity_file == str(key)
        assert w.python == "/opt/venv/bin/python"
    assert len(inv.hosts()) == 6


def test_example_inventory_without_its_key_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/id_ed25519 there
    found = problems(REPO / "inventory" / "example.yaml")
    assert found == [(7, "defaults.identity_file",
                      f"identity file {tmp_path}/.ssh/id_ed25519 is missing or unreadable")]


def test_local_inventory_loads():
    inv = inventory.load(REPO / "inventory" / "local.yaml")
    assert inv.name == "local"
    assert inv.scheduler.host.address == "127.0.0.1"
    assert inv.scheduler.host.connection == "local"
    assert (inv.scheduler.port, inv.scheduler.dashboard_port) == (8786, 8787)
    assert inv.scheduler.python == sys.executable
    (group,) = inv.workers
    assert group.host.address == "127.0.0.1" and group.host.connection == "local"
    assert (group.nworkers, group.nthreads, group.memory_limit) == (2, 1, "auto")
    assert group.python == sys.executable
    assert [h.address for h in inv.hosts()] == ["127.0.0.1"]  # scheduler and workers share it


def test_defaults_are_inherited_and_overridden_per_host(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "k1").write_text("key")
    (tmp_path / "k2").write_text("key")
    path = write(tmp_path, """\
defaults:
  user: alice
  identity_file: ~/k1
  python: /opt/py/bin/python
  workdir: /scratch/cc
  nworkers: 2
  nthreads: 4
  memory_limit: 4GiB
  nanny: false
  connect_timeout: 5
scheduler:
  host: s
  user: root
workers:
  - host: w1
  - host: w2
    user: bob
    identity_file: ~/k2
    python: /usr/bin/python3.12
    workdir: /data/cc
    nworkers: 1
    nthreads: 16
    memory_limit: 0.5
    nanny: true
    connect_timeout: 2.5
""")
    inv = inventory.load(path)
    s = inv.scheduler
    assert s.host.user == "root"  # overridden
    assert s.host.identity_file == str(tmp_path / "k1")  # inherited, ~ expanded
    assert (s.python, s.workdir, s.host.connect_timeout) == ("/opt/py/bin/python", "/scratch/cc", 5.0)
    w1, w2 = inv.workers
    assert (w1.host.user, w1.host.identity_file, w1.python, w1.workdir) == (
        "alice", str(tmp_path / "k1"), "/opt/py/bin/python", "/scratch/cc")
    assert (w1.nworkers, w1.nthreads, w1.memory_limit, w1.nanny, w1.host.connect_timeout) == (
        2, 4, "4GiB", False, 5.0)
    assert (w2.host.user, w2.host.identity_file, w2.python, w2.workdir) == (
        "bob", str(tmp_path / "k2"), "/usr/bin/python3.12", "/data/cc")
    assert (w2.nworkers, w2.nthreads, w2.memory_limit, w2.nanny, w2.host.connect_timeout) == (
        1, 16, "0.5", True, 2.5)


def test_built_in_defaults(tmp_path):
    inv = inventory.load(write(tmp_path, "scheduler:\n  host: s\nworkers:\n  - host: w\n"))
    s, (w,) = inv.scheduler, inv.workers
    assert (s.port, s.dashboard_port, s.workdir) == (8786, 8787, f"/tmp/clusterctl-{getpass.getuser()}")
    assert s.host.connection == "ssh" and s.host.ssh_port is None and s.host.user is None
    assert s.host.connect_timeout == 10.0
    assert (w.nworkers, w.nthreads, w.memory_limit, w.nanny) == (1, None, "auto", True)


def test_name_defaults_to_the_file_stem(tmp_path):
    body = "scheduler:\n  host: s\nworkers:\n  - host: w\n"
    assert inventory.load(write(tmp_path, body, "gpu-farm.yaml")).name == "gpu-farm"
    assert inventory.load(write(tmp_path, "name: other\n" + body, "gpu-farm.yaml")).name == "other"


def test_ssh_port_semantics(tmp_path):
    path = write(tmp_path, """\
defaults:
  port: 2222
scheduler:
  host: s
  port: 9000
  dashboard_port: 9001
workers:
  - host: w1
  - host: w2
    port: 2200
  - host: w3
    ssh_port: 2201
""")
    inv = inventory.load(path)
    # defaults.port is the SSH port; the scheduler's port is Dask's and does not touch SSH
    assert inv.scheduler.host.ssh_port == 2222
    assert (inv.scheduler.port, inv.scheduler.dashboard_port) == (9000, 9001)
    assert [w.host.ssh_port for w in inv.workers] == [2222, 2200, 2201]

    path = write(tmp_path, """\
defaults:
  port: 2222
scheduler:
  host: s
  ssh_port: 2300
workers:
  - host: w
""")
    inv = inventory.load(path)
    assert inv.scheduler.host.ssh_port == 2300 and inv.scheduler.port == 8786
    assert inv.workers[0].host.ssh_port == 2222


def test_same_host_with_different_ssh_ports_is_fine(tmp_path):
    path = write(tmp_path, """\
scheduler:
  host: s
workers:
  - host: w
  - host: w
    port: 2222
  - host: w
    ssh_port: 2223
""")
    inv = inventory.load(path)
    assert [w.host.ssh_port for w in inv.workers] == [None, 2222, 2223]
    assert len({w.host.id for w in inv.workers}) == 3


def test_python_default_depends_on_connection(tmp_path):
    path = write(tmp_path, """\
scheduler:
  host: s
  connection: local
workers:
  - host: w1
  - host: w2
    connection: local
  - host: w3
    connection: local
    python: /my/python
""")
    inv = inventory.load(path)
    assert inv.scheduler.python == sys.executable
    assert [w.python for w in inv.workers] == ["python3", sys.executable, "/my/python"]


# -- bad files: one error, every problem, each at its line --------------------------------------


def test_every_problem_is_reported_at_once(tmp_path):
    path = write(tmp_path, """\
name: c
bogus: 1
defaults:
  user: root
  colour: red
  port: true
scheduler:
  host: a
  port: 8786
  dashboard_port: 8786
workers:
  - host: b
    nthreads: "4"
    memory_limit: lots
    extra: 1
  - host: b
    port: 0
  - host: c
    port: 70000
  - host: d
    port: 2222
""")
    found = problems(path)
    assert found == sorted(found, key=lambda p: (p[0], p[1]))
    assert where(found) == {
        (2, "bogus"),
        (5, "defaults.colour"),
        (6, "defaults.port"),
        (10, "scheduler.dashboard_port"),
        (13, "workers[0].nthreads"),
        (14, "workers[0].memory_limit"),
        (15, "workers[0].extra"),
        (16, "workers[1].host"),
        (17, "workers[1].port"),
        (19, "workers[2].port"),
    }
    msgs = {(line, field): msg for line, field, msg in found}
    assert "unknown key" in msgs[(2, "bogus")]
    assert "unknown key" in msgs[(5, "defaults.colour")]
    assert "unknown key" in msgs[(15, "workers[0].extra")]
    assert "valid integer" in msgs[(6, "defaults.port")] and "True" in msgs[(6, "defaults.port")]
    assert "valid integer" in msgs[(13, "workers[0].nthreads")] and "'4'" in msgs[(13, "workers[0].nthreads")]
    assert "'lots'" in msgs[(14, "workers[0].memory_limit")]
    assert "already listed as workers[0]" in msgs[(16, "workers[1].host")]
    assert "8786" in msgs[(10, "scheduler.dashboard_port")]


def test_unknown_keys_at_every_level(tmp_path):
    path = write(tmp_path, """\
nmae: typo
defaults:
  usr: root
scheduler:
  host: s
  dashbord_port: 1
workers:
  - host: w
    nthread: 2
""")
    found = problems(path)
    assert where(found) == {(1, "nmae"), (3, "defaults.usr"), (6, "scheduler.dashbord_port"),
                            (9, "workers[0].nthread")}
    assert all("unknown key" in msg for _, _, msg in found)


def test_odd_keys_are_named_on_one_readable_line(tmp_path):
    # A key with a colon would split "FILE:LINE: FIELD: message" in the wrong place; a key with a
    # dot would read as a path. Found by the fuzz test (a top-level key ':').
    path = write(tmp_path, """\
':': null
scheduler:
  host: s
  'a.b': 1
  ' x': 2
workers:
  - host: w
    'k:v': 3
""")
    found = problems(path)
    assert where(found) == {(1, "'\\x3a'"), (4, "scheduler.'a.b'"), (5, "scheduler.' x'"),
                            (8, "workers[0].'k\\x3av'")}
    assert all("unknown key" in msg for _, _, msg in found)
    assert not any(":" in field for _, field, _ in found)


def test_keys_yaml_does_not_read_as_strings_are_named_alike_on_every_path(tmp_path):
    # A float key and a duplicated float key: quoted like the text YAML read, whether the schema or
    # the duplicate-key check reports them, so 1.5 never reads as a path. (The schema names a null
    # key by the text 'None' already: it shows as None.)
    path = write(tmp_path, """\
scheduler:
  host: s
  1.5: a
  ~: b
workers:
  - host: w
    2.5: c
    2.5: d
""")
    fields = {field for _, field, _ in problems(path)}
    assert fields == {"scheduler.'1.5'", "scheduler.None", "workers[0].'2.5'"}, fields
    assert not any(":" in f or f.endswith((".1.5", ".2.5")) for f in fields), fields

def test_wrong_types(tmp_path):
    path = write(tmp_path, """\
name: 5
scheduler:
  host: s
  port: "8786"
workers:
  - host: w
    nthreads: "4"
    port: true
    nanny: "no"
    nworkers: 0
""")
    assert where(problems(path)) == {(1, "name"), (4, "scheduler.port"), (7, "workers[0].nthreads"),
                                     (8, "workers[0].port"), (9, "workers[0].nanny"),
                                     (10, "workers[0].nworkers")}


def test_missing_scheduler(tmp_path):
    found = problems(write(tmp_path, "workers:\n  - host: w\n"))
    assert where(found) == {(1, "scheduler")}
    assert "required" in found[0][2]


def test_scheduler_without_host(tmp_path):
    found = problems(write(tmp_path, "scheduler:\n  port: 8000\nworkers:\n  - host: w\n"))
    assert where(found) == {(1, "scheduler.host")}


@pytest.mark.parametrize("workers", ["", "workers:\n", "workers: []\n"], ids=["missing", "null", "empty"])
def test_workers_missing_or_empty(tmp_path, workers):
    path = write(tmp_path, "scheduler:\n  host: s\n" + workers)
    found = problems(path)
    line = 3 if workers else 1
    assert where(found) == {(line, "workers")}
    assert "at least one" in found[0][2]


def test_duplicate_workers(tmp_path):
    path = write(tmp_path, """\
scheduler:
  host: s
workers:
  - host: w
  - host: v
    port: 2222
  - host: w
    port: 22
  - host: v
    ssh_port: 2222
""")
    found = problems(path)
    assert where(found) == {(7, "workers[2].host"), (9, "workers[3].host")}
    msgs = dict(((line, field), msg) for line, field, msg in found)
    assert "host w port 22 is already listed as workers[0]" in msgs[(7, "workers[2].host")]
    assert "host v port 2222 is already listed as workers[1]" in msgs[(9, "workers[3].host")]


def test_worker_port_and_ssh_port_must_agree(tmp_path):
    path = write(tmp_path, "scheduler:\n  host: s\nworkers:\n  - host: w\n    port: 2222\n    ssh_port: 2223\n")
    found = problems(path)
    assert where(found) == {(6, "workers[0].ssh_port")}


@pytest.mark.parametrize("port", [0, 70000, -1])
def test_ports_out_of_range(tmp_path, port):
    path = write(tmp_path, f"""\
defaults:
  port: {port}
scheduler:
  host: s
  port: {port}
  dashboard_port: {port}
  ssh_port: {port}
workers:
  - host: w
    port: {port}
""")
    assert where(problems(path)) == {(2, "defaults.port"), (5, "scheduler.port"),
                                     (6, "scheduler.dashboard_port"), (7, "scheduler.ssh_port"),
                                     (10, "workers[0].port")}


def test_scheduler_port_equal_to_dashboard_port(tmp_path):
    path = write(tmp_path, "scheduler:\n  host: s\n  port: 9000\n  dashboard_port: 9000\nworkers:\n  - host: w\n")
    found = problems(path)
    assert where(found) == {(4, "scheduler.dashboard_port")}
    assert "9000" in found[0][2]


def test_identity_file_that_does_not_exist(tmp_path):
    missing = tmp_path / "nope" / "id_rsa"
    path = write(tmp_path, f"""\
defaults:
  identity_file: {missing}
scheduler:
  host: s
workers:
  - host: w1
  - host: w2
    identity_file: {missing}2
  - host: w3
    connection: local
""")
    found = problems(path)
    # one problem for the defaults line although two hosts inherit it; the local host needs no key
    assert where(found) == {(2, "defaults.identity_file"), (8, "workers[1].identity_file")}
    assert all("missing or unreadable" in msg for _, _, msg in found)
    assert str(missing) in found[0][2]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a mode-000 file anyway")
def test_identity_file_without_read_permission(tmp_path):
    key = tmp_path / "key"
    key.write_text("secret")
    key.chmod(0)
    path = write(tmp_path, f"scheduler:\n  host: s\nworkers:\n  - host: w\n    identity_file: {key}\n")
    assert where(problems(path)) == {(5, "workers[0].identity_file")}


@pytest.mark.parametrize("value", ["lots", "4 gigs", "-1GiB", "''"])
def test_bad_memory_limit(tmp_path, value):
    path = write(tmp_path, f"""\
defaults:
  memory_limit: {value}
scheduler:
  host: s
workers:
  - host: w1
  - host: w2
    memory_limit: {value}
""")
    found = problems(path)
    assert where(found) == {(2, "defaults.memory_limit"), (8, "workers[1].memory_limit")}
    assert all("not a memory size" in msg for _, _, msg in found)


@pytest.mark.parametrize("value", ["auto", "0", "1000000", "4GiB", "4 GB", "512MiB", "0.5", "2.5GiB"])
def test_good_memory_limit(tmp_path, value):
    path = write(tmp_path, f"scheduler:\n  host: s\nworkers:\n  - host: w\n    memory_limit: {value}\n")
    assert inventory.load(path).workers[0].memory_limit == value


@pytest.mark.parametrize("name", ["'bad name'", "'-dash-first'", "'a/b'", "x" * 64])
def test_invalid_cluster_name(tmp_path, name):
    path = write(tmp_path, f"scheduler:\n  host: s\nname: {name}\nworkers:\n  - host: w\n")
    found = problems(path)
    assert where(found) == {(3, "name")}
    assert "not a usable cluster name" in found[0][2]


def test_invalid_name_from_the_file_stem(tmp_path):
    path = write(tmp_path, "scheduler:\n  host: s\nworkers:\n  - host: w\n", "my cluster.yaml")
    found = problems(path)
    assert where(found) == {(1, "name")}
    assert "'my cluster'" in found[0][2]


def test_duplicated_yaml_key(tmp_path):
    path = write(tmp_path, """\
scheduler:
  host: s
workers:
  - host: w
defaults:
  user: a
  user: b
scheduler:
  host: t
  bogus: 1
""")
    found = problems(path)
    # both duplicates, plus a problem inside the second section: validation went on
    assert where(found) == {(7, "defaults.user"), (8, "scheduler"), (10, "scheduler.bogus")}
    msgs = {(line, field): msg for line, field, msg in found}
    assert "appears twice" in msgs[(8, "scheduler")] and "appears twice" in msgs[(7, "defaults.user")]


def test_duplicated_yaml_key_in_a_worker(tmp_path):
    path = write(tmp_path, """\
scheduler:
  host: s
workers:
  - host: w
    nthreads: 2
    nthreads: 4
""")
    assert where(problems(path)) == {(6, "workers[0].nthreads")}


@pytest.mark.parametrize("text, line", [
    ("scheduler:\n  host: a\n port: 8786\nworkers: [{host: b}]\n", 3),
    ("scheduler:\n  host: a\nworkers:\n\t- host: b\n", 4),
    ("scheduler: {host: a\nworkers: []\n", 2),
], ids=["indent", "tab", "unclosed-flow"])
def test_invalid_yaml_gives_the_line(tmp_path, text, line):
    path = write(tmp_path, text)
    err = error_of(path)
    assert err.message.startswith(f"{path}:{line}: not valid YAML: "), err.message


@pytest.mark.parametrize("text", ["- host: a\n- host: b\n", "just a string\n", "", "# only a comment\n"])
def test_top_level_must_be_a_mapping(tmp_path, text):
    path = write(tmp_path, text)
    err = error_of(path)
    assert err.message.startswith(f"{path}:1: the inventory must be a mapping"), err.message


def test_file_that_does_not_exist(tmp_path):
    path = tmp_path / "missing.yaml"
    err = error_of(path)
    assert err.message == f"cannot read inventory {path}: No such file or directory"
    assert err.details == []


def test_directory_instead_of_file(tmp_path):
    err = error_of(tmp_path)
    assert err.message.startswith(f"cannot read inventory {tmp_path}:")


# -- known bugs ---------------------------------------------------------------------------------


def test_missing_scheduler_still_reports_worker_problems(tmp_path):
    path = write(tmp_path, """\
name: 'bad name'
workers:
  - host: w
    memory_limit: lots
  - host: w
""")
    assert where(problems(path)) == {(1, "scheduler"), (1, "name"), (4, "workers[0].memory_limit"),
                                     (5, "workers[1].host")}


def test_defaults_port_and_ssh_port_must_agree(tmp_path):
    path = write(tmp_path, """\
defaults:
  port: 2222
  ssh_port: 22
scheduler:
  host: s
workers:
  - host: w
""")
    found = problems(path)
    assert where(found) == {(3, "defaults.ssh_port")}


# -- found by tests/test_fuzz.py: each was an exit 1 ("unexpected error"), a hang, or accepted ----------


def test_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "inv.yaml"
    path.write_bytes(b"name: x\nscheduler:\n  host: \xff\xfe\nworkers: [{host: w}]\n")
    err = error_of(path)  # was UnicodeDecodeError, exit 1
    assert err.message == f"{path}:3: not UTF-8 text (byte 0xff); save the inventory as UTF-8"


@pytest.mark.parametrize("text, line", [
    ("a: " + "[" * 3000 + "]" * 3000 + "\n", 3),
    ("a:\n" + "".join("  " * i + "-\n" for i in range(400)) + "  " * 400 + "- x\n", 3 + inventory.MAX_DEPTH),
], ids=["flow", "block"])
def test_deep_nesting_is_refused_with_its_line(tmp_path, text, line):
    path = write(tmp_path, "scheduler: {host: s}\nworkers: [{host: w}]\n" + text)
    err = error_of(path)  # was RecursionError, exit 1; the line is where it gets too deep
    assert err.message.startswith(f"{path}:{line}: nested more than {inventory.MAX_DEPTH} levels deep"), err.message


def test_recursive_alias_is_refused(tmp_path):
    path = write(tmp_path, "scheduler: {host: s}\nworkers: &w [{host: w}, *w]\n")
    err = error_of(path)  # was RecursionError, exit 1
    assert err.message.startswith(f"{path}:2: an alias refers to a collection that contains it"), err.message


def test_alias_bomb_is_refused_at_once(tmp_path):
    bomb = ["b0: &b0 [x, x, x, x, x, x, x, x, x]"]
    bomb += [f"b{i}: &b{i} [" + ", ".join([f"*b{i - 1}"] * 9) + "]" for i in range(1, 12)]
    path = write(tmp_path, "\n".join(bomb) + "\nscheduler: {host: s}\nworkers: *b11\n")
    import time

    start = time.perf_counter()
    err = error_of(path)  # was a hang: 9^12 values walked for line numbers
    assert time.perf_counter() - start < 2
    assert f"more than {inventory.MAX_NODES} values once its aliases are expanded" in err.message


def test_aliases_that_expand_modestly_still_work(tmp_path):
    path = write(tmp_path, """\
defaults: &d
  nthreads: 2
scheduler: {host: s}
workers:
  - &w {host: w1, nthreads: 3}
  - {<<: *w, host: w2}
""")
    inv = inventory.load(path)
    assert [(w.host.address, w.nthreads) for w in inv.workers] == [("w1", 3), ("w2", 3)]


@pytest.mark.parametrize("value, message", [
    ("9" * 5000, "a number with more than 4300 digits"),
    ("2001-13-45", "cannot read this value: month must be in 1..12"),
], ids=["huge-int", "bad-date"])
def test_values_yaml_cannot_construct(tmp_path, value, message):
    path = write(tmp_path, f"scheduler:\n  host: s\n  port: {value}\nworkers: [{{host: w}}]\n")
    err = error_of(path)  # was ValueError from inside PyYAML, exit 1
    assert err.message == f"{path}:3: not valid YAML: {message}"


def test_character_yaml_does_not_allow_gives_its_line(tmp_path):
    path = write(tmp_path, "scheduler: {host: s}\nworkers: [{host: w}]\nname: x\x00\n")
    err = error_of(path)
    assert err.message == f"{path}:3: not valid YAML: the character '\\x00' is not allowed in YAML; remove it"


@pytest.mark.parametrize("field, value", [
    ("host", '"a\\0b"'), ("host", '"w\\n"'), ("host", "-oProxyCommand=x"), ("host", "ホスト"), ("host", "''"),
    ("python", '"/usr/bin/python3\\0"'), ("workdir", '"/tmp/a\\nb"'), ("user", "''"), ("user", '"\\e[2J"'),
], ids=lambda v: v.encode("unicode_escape").decode())
def test_host_and_paths_refuse_control_characters_and_odd_names(tmp_path, field, value):
    entry = f"host: {value}" if field == "host" else f"host: w\n    {field}: {value}"
    path = write(tmp_path, f"scheduler:\n  host: s\nworkers:\n  - nthreads: 1\n    {entry}\n")
    found = problems(path)  # NUL used to reach the host's agent (TypeError there), a newline the argv
    assert [(line, f) for line, f, _ in found] == [(5 if field == "host" else 6, f"workers[0].{field}")]
    if field == "host":
        assert found[0][2].startswith("not a host name or IP address")
    assert "\x00" not in found[0][2] and "\x1b" not in found[0][2]


def test_cluster_name_with_a_trailing_newline_is_refused(tmp_path):
    path = write(tmp_path, 'name: "x\\n"\nscheduler: {host: s}\nworkers: [{host: w}]\n')
    assert where(problems(path)) == {(1, "name")}  # "$" in the pattern let it through


@pytest.mark.parametrize("value", ["[]", "0", "''", "false", "[a]"])
def test_defaults_that_are_not_a_mapping(tmp_path, value):
    path = write(tmp_path, f"defaults: {value}\nscheduler: {{host: s}}\nworkers: [{{host: w}}]\n")
    assert where(problems(path)) == {(1, "defaults")}  # `or {}` let the falsy ones through


def test_empty_defaults_section_is_fine(tmp_path):
    path = write(tmp_path, "defaults:\nscheduler: {host: s}\nworkers: [{host: w}]\n")
    assert inventory.load(path).workers[0].nworkers == 1


def test_huge_nworkers_is_refused_not_built(tmp_path):
    path = write(tmp_path, "scheduler: {host: s}\nworkers:\n  - host: w\n    nworkers: 100000000000\n")
    found = problems(path)  # was a hang in spec.build (10^11 process specs)
    assert where(found) == {(4, "workers[0].nworkers")}
    assert "less than or equal to 1024" in found[0][2]


def test_too_many_worker_processes_in_all(tmp_path):
    workers = "".join(f"  - {{host: w{i}, nworkers: 1000}}\n" for i in range(11))
    path = write(tmp_path, "scheduler: {host: s}\nworkers:\n" + workers)
    found = problems(path)
    assert where(found) == {(2, "workers")}
    assert "11000 worker processes in all" in found[0][2]


def test_hosts_that_would_share_an_id(tmp_path):
    path = write(tmp_path, "scheduler: {host: s}\nworkers:\n  - host: 'fe80::1'\n  - host: fe80__1\n")
    found = problems(path)  # both were the host id fe80__1: one process name, one directory, one state entry
    assert where(found) == {(4, "workers[1].host")}
    assert "same id 'fe80__1' as workers[0].host" in found[0][2]


def test_long_values_are_cut_in_messages(tmp_path):
    path = write(tmp_path, f"scheduler:\n  host: s\n  port: '{'x' * 100_000}'\nworkers: [{{host: w}}]\n")
    (detail,) = error_of(path).details
    assert detail.startswith(f"{path}:3: scheduler.port: Input should be a valid integer (got 'xxx")
    assert len(detail) < len(str(path)) + 150


def test_keys_yaml_reads_as_other_types_get_their_line(tmp_path):
    path = write(tmp_path, "scheduler: {host: s}\nworkers: [{host: w}]\n~: x\n3: y\n")
    assert where(problems(path)) == {(3, "None"), (4, "3")}


def test_many_problems_are_capped(tmp_path):
    workers = "".join(f"  - {{host: w{i}, nthreads: x}}\n" for i in range(150))
    (detail, *_) = details = error_of(write(tmp_path, "scheduler: {host: s}\nworkers:\n" + workers)).details
    assert len(details) == inventory.MAX_DETAILS + 1
    assert details[-1] == "... and 50 more problems"


# -- what Dask users configure (issue 25) ------------------------------------------------------------


def test_dask_keys_are_merged_and_nested(tmp_path):
    inv = inventory.load(write(tmp_path, """\
defaults:
  env: {A: 1, B: two}
  dask_config: {distributed.worker.profile.interval: 20ms}
scheduler:
  host: s
workers:
  - host: w
    env: {B: three, C: true}
    dask_config: {distributed: {worker: {memory: {spill: 0.9}}}}
    resources: {GPU: 1, MEMORY: 64e9}
    worker_options: {lifetime: 1h, lifetime-restart: true, preload: [a.py, b.py]}
"""))
    g = inv.workers[0]
    assert g.env == (("A", "1"), ("B", "three"), ("C", "true")) and inv.scheduler.env == (("A", "1"), ("B", "two"))
    assert g.dask_config == ("distributed:\n  worker:\n    memory:\n      spill: 0.9\n"
                             "    profile:\n      interval: 20ms\n")
    assert g.resources == (("GPU", 1.0), ("MEMORY", 64e9))
    assert g.options == ("--lifetime=1h", "--lifetime-restart", "--preload=a.py", "--preload=b.py")


def test_dask_keys_refuse_typos_reserved_names_and_bad_values_with_their_lines(tmp_path):
    found = problems(write(tmp_path, """\
scheduler:
  host: s
  scheduler_options: {port: 1, idle-timout: 1h, jupyter: true}
workers:
  - host: w
    env: {CLUSTERCTL_PROCESS: x}
    worker_options: {lifetme: 1h, nthreads: 2, lifetime-restart: yes-please}
    resources: {GPU: lots}
    local_directory: scratch
"""))
    said = {(line, field): msg for line, field, msg in found}
    assert "set by clusterctl itself" in said[(3, "scheduler.scheduler_options.port")]
    assert "did you mean idle-timeout" in said[(3, "scheduler.scheduler_options.idle-timout")]
    assert "serves Jupyter, which runs code" in said[(3, "scheduler.scheduler_options.jupyter")]
    assert "CLUSTERCTL_PROCESS is set by clusterctl itself" in said[(6, "workers[0].env")]
    assert "did you mean lifetime" in said[(7, "workers[0].worker_options.lifetme")]
    assert "use nthreads:" in said[(7, "workers[0].worker_options.nthreads")]
    assert "is a flag: true or false" in said[(7, "workers[0].worker_options.lifetime-restart")]
    assert "'lots' is not a number" in said[(8, "workers[0].resources")]
    assert "must be an absolute path" in said[(9, "workers[0].local_directory")]


def test_jump_hosts_inherited_chained_or_turned_off(tmp_path):
    path = write(tmp_path, """\
defaults:
  jump: admin@bastion.example:2222
scheduler:
  host: s
workers:
  - host: w1
    jump: none
  - host: w2
    jump: a@hop1,hop2
  - host: w3
    jump: "[fe80::1]:22"
  - host: w4
""")
    inv = inventory.load(path)
    assert inv.scheduler.host.jump == "admin@bastion.example:2222"
    assert [g.host.jump for g in inv.workers] == ["none", "a@hop1,hop2", "[fe80::1]:22", "admin@bastion.example:2222"]
    assert inventory.split_jump("a@hop1,[::1]:3,hop2:4") == [("a", "hop1", None), (None, "::1", 3), (None, "hop2", 4)]
    # Recorded in the state only where set: a state of hosts without one reads as it always did.
    assert "jump" not in inventory.Host(address="x").to_dict()
    assert inventory.Host(address="x", jump="b").to_dict()["jump"] == "b"


def test_bad_jump_hosts_each_with_its_line(tmp_path):
    path = write(tmp_path, """\
scheduler:
  host: s
  jump: ""
workers:
  - host: w1
    jump: "bad user@b"
  - host: w2
    jump: "b:99999"
  - host: w3
    jump: "ok,-dash"
  - host: w4
    jump: 5
  - host: w5
    connection: local
    jump: b
""")
    found = {(line, field): msg for line, field, msg in problems(path)}
    assert set(found) == {(3, "scheduler.jump"), (6, "workers[0].jump"), (8, "workers[1].jump"),
                          (10, "workers[2].jump"), (12, "workers[3].jump"), (15, "workers[4].jump")}
    assert "must not be empty" in found[(3, "scheduler.jump")]
    assert "plain user name" in found[(6, "workers[0].jump")]
    assert "1 to 65535" in found[(8, "workers[1].jump")]
    assert found[(10, "workers[2].jump")].startswith("'-dash': not [user@]host[:port]")
    assert "local host is not reached over SSH" in found[(15, "workers[4].jump")]


def test_a_jump_host_in_the_defaults_is_not_given_to_local_hosts(tmp_path):
    path = write(tmp_path, "defaults:\n  jump: b\nscheduler:\n  host: s\nworkers:\n  - host: l\n    connection: local\n")
    inv = inventory.load(path)
    assert inv.scheduler.host.jump == "b" and inv.workers[0].host.jump is None
