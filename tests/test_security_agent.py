"""The agent acts only on clusterctl's own folders and processes (issue 23): a request for any
other file or command, as a bug or a tampered client could send, is refused. Each case is asked of
a real agent, started as `up` starts it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from clusterctl import agent, agent_session


def _ask(*requests: dict) -> list[dict]:
    lines = b"".join(json.dumps(r).encode() + b"\n" for r in requests)
    done = subprocess.run([sys.executable, "-c", agent_session.BOOT, "clusterctl-agent", sys.executable],
                          input=agent_session.source() + lines, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    return [json.loads(line) for line in done.stdout.splitlines()]


def _cluster(tmp_path) -> str:
    work = tmp_path / "work"
    work.mkdir(mode=0o700)
    root = work / "c"
    root.mkdir(mode=0o700)
    (root / agent.CLUSTER_FILE).write_text("c\n")
    (root / "h-worker-0").mkdir()
    (root / "h-worker-0" / "log").write_text("worker line\n")
    return f"{root}/"


def test_tail_and_read_give_only_files_of_a_cluster_folder(tmp_path):
    root = _cluster(tmp_path)
    secret = tmp_path / "secret"
    secret.write_text("not yours\n")
    (tmp_path / "work" / "c" / "h-worker-0" / "link").symlink_to(secret)  # a link out of the folder
    tail, outside, linked, read_ok, read_bad = _ask(
        {"op": "tail", "files": [f"{root}h-worker-0/log"]},
        {"op": "tail", "files": ["/etc/shadow", str(secret)]},
        {"op": "tail", "files": [f"{root}h-worker-0/link"]},
        {"op": "read", "path": f"{root}h-worker-0/log"},
        {"op": "read", "path": "/etc/shadow"})
    assert tail["ok"]["tails"][f"{root}h-worker-0/log"] == "worker line"
    assert all(text.startswith("(refused: ") for text in outside["ok"]["tails"].values()), outside
    assert "not yours" not in json.dumps(linked) and "(refused: " in json.dumps(linked)
    assert "data" in read_ok["ok"]
    assert read_bad["fail"].startswith("Refused: /etc/shadow is not in a clusterctl cluster folder")


def test_write_outside_a_cluster_folder_is_refused(tmp_path):
    root = _cluster(tmp_path)
    target = tmp_path / "elsewhere" / "planted"
    ok, bad = _ask({"op": "write", "files": [{"path": f"{root}scheduler.json", "text": "{}"}]},
                   {"op": "write", "files": [{"path": str(target), "text": "x"}]})
    assert ok == {"ok": {"failed": {}}} and (tmp_path / "work" / "c" / "scheduler.json").read_text() == "{}"
    assert bad["fail"].startswith("Refused: ") and not target.exists()


def test_start_runs_only_dask_processes_and_job_drivers_in_the_cluster_folder(tmp_path):
    root = _cluster(tmp_path)
    planted = tmp_path / "PWNED"
    shell = {"name": "x", "dir": f"{root}x", "argv": ["/bin/sh", "-c", f"touch {planted}"]}
    elsewhere = {"name": "w", "dir": str(tmp_path / "w"), "argv": [sys.executable, "-m", "dask", "worker", "--help"]}
    driver_out = {"name": "j", "dir": f"{root}x", "argv": [sys.executable, "-m", "clusterctl.driver", f"{root}x"]}
    # `sh -m dask worker` would run a script named dask from the process's folder
    not_python = {"name": "y", "dir": f"{root}y", "argv": ["/bin/sh", "-m", "dask", "worker"]}
    procs = (shell, elsewhere, driver_out, not_python)
    answers = _ask(*({"op": "start", "procs": [p], "roots": {root: "c"}} for p in procs))
    for answer in answers:
        assert answer["fail"].startswith("Refused: will not start "), answer
    assert "is not the python this agent runs with" in answers[-1]["fail"]
    assert not planted.exists() and not (tmp_path / "w").exists() and not (tmp_path / "work" / "c" / "y").exists()
    # the same interpreter by another name (a link to it) is the agent's python
    link = tmp_path / "py"
    link.symlink_to(sys.executable)
    same = {"name": "z", "dir": f"{root}z", "argv": [str(link), "-m", "dask", "worker", "--version"]}
    started, = _ask({"op": "start", "procs": [same], "roots": {root: "c"}})
    assert "pid" in started["ok"]["started"]["z"], started


def test_stop_removes_only_inside_the_cluster_folder(tmp_path):
    root = _cluster(tmp_path)
    keep = tmp_path / "keep"
    keep.mkdir()
    (tmp_path / "work" / "c" / "tls").mkdir()
    _ask({"op": "stop", "procs": [], "prefix": root, "remove": [f"{root}tls", str(keep)], "grace": 0})
    assert keep.exists() and not (tmp_path / "work" / "c" / "tls").exists()
    assert os.path.isdir(root)


def test_gaps_a_second_look_found_are_closed(tmp_path):
    """A reviewer's bypasses of the first confinement: a key read through tail/read, a home folder
    named as a cluster root to write into, a made-up process folder to delete a sibling with."""
    root = _cluster(tmp_path)
    keys = tmp_path / "work" / "c" / "tls"
    keys.mkdir()
    (keys / "client-key.pem").write_text("PRIVATE KEY\n")
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / ".bashrc").write_text("original\n")
    sibling = tmp_path / "work" / "d"
    sibling.mkdir()
    tail, read, write = _ask(
        {"op": "tail", "files": [f"{root}tls/client-key.pem"]},
        {"op": "read", "path": f"{root}tls/client-key.pem"},
        {"op": "write", "roots": {f"{home}/": "home"}, "files": [{"path": f"{home}/.bashrc", "text": "pwned"}]})
    assert "PRIVATE" not in json.dumps(tail) + json.dumps(read)
    assert "a certificate or key" in tail["ok"]["tails"][f"{root}tls/client-key.pem"]
    assert read["fail"].startswith("Refused: ") and "a certificate or key" in read["fail"]
    assert "is not a clusterctl cluster folder" in json.dumps(write), write
    assert (home / ".bashrc").read_text() == "original\n" and not (home / agent.CLUSTER_FILE).exists()
    _ask({"op": "stop", "procs": [{"name": "x", "dir": f"{tmp_path}/work/made-up", "pid": None}],
          "remove": [str(sibling)], "grace": 0})
    assert sibling.is_dir()


def test_a_cluster_folder_another_host_is_claiming_is_not_foreign(tmp_path):
    """Hosts that share the folder (NFS, the lab) claim it at once: another host's marker may still be
    a temporary file. A folder holding anything else and no marker is refused."""
    work = tmp_path / "work"
    work.mkdir(mode=0o700)
    (work / "c").mkdir(mode=0o700)
    (work / "c" / f"{agent.CLUSTER_FILE}.0123abcd.tmp").write_text("c\n")
    (work / "d").mkdir(mode=0o700)
    (work / "d" / "notes.txt").write_text("mine\n")
    ok, foreign = _ask(
        {"op": "write", "roots": {f"{work}/c/": "c"}, "files": [{"path": f"{work}/c/scheduler.json", "text": "{}"}]},
        {"op": "write", "roots": {f"{work}/d/": "d"}, "files": [{"path": f"{work}/d/scheduler.json", "text": "{}"}]})
    assert ok == {"ok": {"failed": {}}} and (work / "c" / agent.CLUSTER_FILE).read_text() == "c\n"
    assert "exists and is not a clusterctl cluster folder" in json.dumps(foreign), foreign
    assert not (work / "d" / "scheduler.json").exists() and not (work / "d" / agent.CLUSTER_FILE).exists()
