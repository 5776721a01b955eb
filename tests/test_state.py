"""``clusterctl.state``: the record of what runs, under $CLUSTERCTL_HOME."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from clusterctl import state
from clusterctl.errors import StateError
from clusterctl.inventory import Host
from clusterctl.state import ClusterState, ProcessRecord


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "cchome"
    monkeypatch.setenv("CLUSTERCTL_HOME", str(h))
    return h


def make_state(name: str = "c") -> ClusterState:
    host = Host(address="10.0.0.2", ssh_port=2222, user="u", identity_file="/k", connect_timeout=5.0)
    return ClusterState(
        cluster=name, inventory="/inv/c.yaml", scheduler_address="tcp://10.0.0.1:8786",
        dashboard_url="http://10.0.0.1:8787/status", http_url="http://10.0.0.1:8787",
        roots={host.id: "/tmp/clusterctl/c/"}, hosts={host.id: host.to_dict()},
        processes=[ProcessRecord(name=f"{host.id}-worker-0", role="worker", host=host.id, python="python3",
                                 dir="/tmp/clusterctl/c/w", pid=4242, argv=["python3", "-m", "dask", "worker"],
                                 started_at=12.5)],
        pythons={host.id: "python3"}, versions={"dask": "2024.8.0"},
    )


def test_home_follows_the_environment(home):
    assert state.home() == home
    assert state.state_path("c") == home / "clusters" / "c" / "state.json"


def test_save_load_round_trip(home):
    original = make_state()
    state.save(original)
    assert original.updated_at > 0
    loaded = state.load("c")
    assert loaded == original
    assert loaded.host("10.0.0.2_2222") == Host(address="10.0.0.2", ssh_port=2222, user="u",
                                                identity_file="/k", connect_timeout=5.0)
    raw = json.loads(state.state_path("c").read_text())
    assert raw["version"] == state.VERSION


def test_load_of_an_unknown_cluster_is_none(home):
    assert state.load("nothing-here") is None


def test_current_is_set_by_save_and_cleared_by_forget(home):
    assert state.current() is None
    state.save(make_state("a"))
    assert state.current() == "a"
    state.save(make_state("b"))
    assert state.current() == "b"
    state.forget("a")  # not the current one: the pointer stays
    assert state.current() == "b"
    assert state.load("a") is None
    state.forget("b")
    assert state.current() is None
    assert state.load("b") is None
    state.forget("b")  # forgetting twice is fine


def test_save_leaves_no_temporary_files(home):
    for _ in range(3):
        state.save(make_state())
    assert sorted(p.name for p in state.cluster_dir("c").iterdir()) == ["state.json"]


def test_failed_save_keeps_the_old_file_and_no_temporary(home):
    state.save(make_state())
    before = state.state_path("c").read_text()
    broken = make_state()
    broken.versions = {"x": object()}  # not JSON-serialisable: the write fails half way
    with pytest.raises(TypeError):
        state.save(broken)
    assert state.state_path("c").read_text() == before
    assert sorted(p.name for p in state.cluster_dir("c").iterdir()) == ["state.json"]


@pytest.mark.parametrize("content", [
    "",
    '{"version": 1, "cluster": "c", "inv',  # truncated
    "this is not json",
    "[1, 2, 3]",
    '{"version": 99, "cluster": "c"}',
    '{"cluster": "c"}',
    '{"version": 1, "cluster": "c"}',  # fields missing
    '{"version": 1, "cluster": "c", "inventory": "i", "scheduler_address": "a", "dashboard_url": "d",'
    ' "http_url": "h", "roots": {}, "hosts": {}, "processes": [{"name": "x"}]}',
    '{"version": 1, "cluster": "c", "inventory": "i", "scheduler_address": "a", "dashboard_url": "d",'
    ' "http_url": "h", "roots": {}, "hosts": {}, "surprise": 1}',
], ids=["empty", "truncated", "not-json", "list", "version-99", "no-version", "missing-fields",
        "bad-process", "unknown-field"])
def test_unreadable_state_file(home, content):
    path = state.state_path("c")
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(StateError) as info:
        state.load("c")
    msg = info.value.message
    assert str(path) in msg
    assert "down --force --inventory" in msg


def test_state_file_that_is_not_utf8(home):
    path = state.state_path("c")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(StateError, match="down --force --inventory"):
        state.load("c")


def test_resolve_name(home):
    with pytest.raises(StateError) as info:
        state.resolve_name(None)
    assert "clusterctl up" in info.value.message
    assert state.resolve_name("explicit") == "explicit"
    state.save(make_state("up-one"))
    assert state.resolve_name(None) == "up-one"
    assert state.resolve_name("other") == "other"


def test_empty_current_file_means_nothing_is_up(home):
    home.mkdir()
    (home / "current").write_text("\n")
    assert state.current() is None
    with pytest.raises(StateError):
        state.resolve_name(None)


HOLDER = textwrap.dedent("""
    import sys
    from clusterctl import state
    with state.locked(sys.argv[1]):
        print("locked", flush=True)
        sys.stdin.read()  # hold it until the test closes our stdin
""")


def test_lock_refuses_a_second_holder(home):
    env = {**os.environ, "CLUSTERCTL_HOME": str(home)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, "c"], env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StateError) as info:
            with state.locked("c"):
                pytest.fail("took a lock that another process holds")
        msg = info.value.message
        assert "busy" in msg and "'c'" in msg
        assert f"clusterctl pid {holder.pid}" in msg
        # another cluster's lock is independent
        with state.locked("d"):
            pass
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=10) == 0
    with state.locked("c"):  # released when the holder is done
        assert (state.cluster_dir("c") / "lock").read_text() == f"clusterctl pid {os.getpid()}"
    assert (state.cluster_dir("c") / "lock").read_text() == ""


def test_lock_is_released_when_the_body_raises(home):
    with pytest.raises(RuntimeError):
        with state.locked("c"):
            raise RuntimeError("boom")
    with state.locked("c"):
        pass


H = "10.0.0.2_2222"  # make_state's host


@pytest.mark.parametrize("edit, said", [
    (lambda d: d["roots"].update({H: 5}), f"roots.{H}: must be a string (got int)"),
    (lambda d: d["pythons"].update({H: ["python3"]}), f"pythons.{H}: must be a string (got list)"),
    (lambda d: d["hosts"][H].update(ssh_port="22"), f"hosts.{H}.ssh_port: must be int or NoneType (got str)"),
    (lambda d: d["hosts"][H].update(connection="telnet"), f"hosts.{H}.connection: must be ssh or local"),
    (lambda d: d.update(hosts=[]), "hosts: must be a mapping of host id to its fields (got list)"),
    (lambda d: d["processes"][0].update(pid="123"), "processes[0].pid: must be int (got str)"),
    (lambda d: d["processes"][0].update(pid=True), "processes[0].pid: must be int (got bool)"),
    (lambda d: d["processes"][0].update(pid=1), "processes[0].pid: must be a process id above 1 (got 1)"),
    (lambda d: d["processes"][0].update(argv=["python", 3]), "processes[0].argv: must be a list of strings"),
    (lambda d: d["processes"][0].update(host="nowhere"), "processes[0].host: 'nowhere' is not one of the recorded hosts"),
    (lambda d: d["processes"][0].update(role="boss"), "processes[0].role: must be scheduler or worker"),
    (lambda d: d.update(tls={"cert": 5}), "tls: must be null or a mapping of strings"),
], ids=["root-int", "python-list", "port-str", "connection", "hosts-list", "pid-str", "pid-bool", "pid-1",
        "argv-int", "host-unknown", "role", "tls"])
def test_a_state_with_wrong_types_is_refused_naming_each_field(home, edit, said):
    good = make_state("c")
    state.save(good)
    path = state.state_path("c")
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(StateError) as info:
        state.load("c")
    assert said in info.value.message and said in "\n".join(info.value.details), info.value.message
    assert str(path) in info.value.message and "down --force --inventory" in info.value.message


def test_the_state_clusterctl_writes_has_no_problems(home):
    state.save(make_state("c"))
    assert state.problems_of(state.load("c")) == []
