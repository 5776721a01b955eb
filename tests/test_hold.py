"""Processes held by the preflight (clusterctl/agent.py: START): the agent of ``up`` starts them
during its probe, they import what their command needs and wait; the start lets them run (the
same process, the same pid), and anything else ends them having bound no port and written nothing.
Real agents and real interpreters on this machine; the whole flow on SSH hosts is in test_ssh.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from clusterctl import agent, remote


class Agent:
    """An agent as ``up`` starts one on a host: ``python -c BOOT serve``, its source on stdin."""

    def __init__(self, env: dict | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", remote.BOOT, "serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env)
        self.proc.stdin.write(remote.agent_payload())

    def ask(self, op: str, **request) -> dict:
        self.proc.stdin.write(json.dumps({"op": op, **request}).encode() + b"\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        assert "ok" in answer, answer
        return answer["ok"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=20)


def _proc(tmp_path: Path, *command: str) -> dict:
    return {"name": "h1-worker-0", "dir": str(tmp_path / "h1-worker-0"),
            "argv": [sys.executable, "-m", "dask", *command], "env": {"X_FROM_SPEC": "1"}, "env_default": {}}


def _marked(proc: dict) -> list[int]:
    return [pid for pid, value in agent._markers().items() if value == proc["dir"]]


def _wait(predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while not (value := predicate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def test_a_held_process_becomes_the_started_one(tmp_path):
    proc = _proc(tmp_path, "worker", "--help")
    a = Agent()
    try:
        a.ask("probe", check=[], ports=[], hold=[proc])
        [held] = _wait(lambda: _marked(proc))
        cmdline = agent._cmdline(held)  # short, one line, the command in full
        assert cmdline.endswith("-m dask worker --help") and "\n" not in cmdline and len(cmdline) < 200
        time.sleep(1.0)  # long enough for --help to have printed, had it run
        assert (Path(proc["dir"]) / "log").read_bytes() == b""  # held: nothing run yet
        started = a.ask("start", procs=[proc])["started"]
        assert started == {proc["name"]: {"pid": held}}
        log = Path(proc["dir"]) / "log"
        assert _wait(lambda: "--scheduler-file" in log.read_text()), log.read_text()
        text = log.read_text()
        assert text.startswith("--- clusterctl: starting h1-worker-0 at ") and "Usage:" in text
        assert _wait(lambda: not _marked(proc))
    finally:
        a.close()


def test_a_held_process_ends_when_the_start_does_not_want_it_or_the_session_ends(tmp_path):
    proc = _proc(tmp_path, "worker", "--scheduler-file", str(tmp_path / "never.json"))
    a = Agent()
    try:
        a.ask("probe", check=[], ports=[], hold=[proc])
        assert _wait(lambda: _marked(proc))
        other = {**proc, "env": {"X_FROM_SPEC": "2"}}  # the start asks for another command: not the held one
        pid = a.ask("start", procs=[other])["started"][proc["name"]]["pid"]
        assert _wait(lambda: _marked(proc) == [pid])
        os.kill(pid, signal.SIGKILL)
        assert _wait(lambda: not _marked(proc))
        a.ask("probe", check=[], ports=[], hold=[proc])  # held again, then the command ends
        assert _wait(lambda: _marked(proc))
    finally:
        a.close()  # the agent ends its held processes before it exits
    assert not _marked(proc)
    assert (Path(proc["dir"]) / "log").read_text().count("--- clusterctl: starting") == 1  # the start's only


def test_release_ends_held_processes_and_a_dead_agent_leaves_none(tmp_path):
    proc = _proc(tmp_path, "worker", "--scheduler-file", str(tmp_path / "never.json"))
    a = Agent()
    try:
        a.ask("probe", check=[], ports=[], hold=[proc])
        assert _wait(lambda: _marked(proc))
        assert a.ask("release") == {"released": 1}
        assert not _marked(proc)  # gone when release answers
        a.ask("probe", check=[], ports=[], hold=[proc])
        assert _wait(lambda: _marked(proc))
        a.proc.kill()  # no agent to end it: the held process sees its stdin close and leaves
        a.proc.wait(timeout=10)
        assert _wait(lambda: not _marked(proc), timeout=10)
        assert (Path(proc["dir"]) / "log").read_bytes() == b""
    finally:
        if a.proc.poll() is None:
            a.close()


def test_one_that_still_runs_is_not_held_again(tmp_path):
    proc = _proc(tmp_path, "worker", "--scheduler-file", str(tmp_path / "never.json"))
    a = Agent()
    try:
        a.ask("start", procs=[proc])
        [pid] = _wait(lambda: _marked(proc))
        check = [{"name": proc["name"], "dir": proc["dir"], "pid": pid}]
        probe = a.ask("probe", check=check, ports=[], hold=[proc])
        assert probe["alive"][proc["name"]]["alive"]
        time.sleep(0.5)
        assert _marked(proc) == [pid]
        a.ask("stop", procs=[proc], grace=5)
    finally:
        a.close()
    assert not _marked(proc)


def test_the_login_environment_wins_over_the_defaults_and_the_spec_over_both(tmp_path):
    # The one-BLAS-thread defaults (spec.ONE_BLAS_THREAD) give way to what the host's login sets.
    login = {**os.environ, "OPENBLAS_NUM_THREADS": "4", "X_FROM_SPEC": "login"}
    show = "import os; print(*(os.environ.get(k) for k in ('OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS', 'X_FROM_SPEC')))"
    proc = {"name": "h1-scheduler", "dir": str(tmp_path / "h1-scheduler"), "argv": [sys.executable, "-c", show],
            "env": {"X_FROM_SPEC": "spec"}, "env_default": {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}}
    a = Agent(env={k: v for k, v in login.items() if k != "OMP_NUM_THREADS"})
    try:
        a.ask("start", procs=[proc])
        log = Path(proc["dir"]) / "log"
        assert _wait(lambda: log.read_text().endswith("\n4 1 spec\n")), log.read_text()
    finally:
        a.close()


def test_a_dask_process_started_without_hold_starts_the_same_way(tmp_path):
    # Not held (no probe first): still through agent.START, with its imports' collector paused and
    # frozen, and Dask's configuration read with libyaml: the same defaults as this process read
    # with PyYAML's pure Python loader, and yaml.safe_load itself left as it was.
    import dask
    import yaml
    from distributed import Client

    sfile = tmp_path / "scheduler.json"
    proc = _proc(tmp_path, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                 "--scheduler-file", str(sfile))
    a = Agent()
    try:
        pid = a.ask("start", procs=[proc])["started"][proc["name"]]["pid"]
        assert agent.BOOT in agent._cmdline(pid) and agent._cmdline(pid).endswith(str(sfile))
        assert _wait(lambda: sfile.exists()), (Path(proc["dir"]) / "log").read_text()
        with Client(scheduler_file=str(sfile), timeout=20) as client:
            enabled, frozen, defaults, safe_load = client.run_on_scheduler(
                lambda: (__import__("gc").isenabled(), __import__("gc").get_freeze_count(),
                         __import__("dask").config.defaults, __import__("yaml").safe_load.__qualname__))
        assert enabled and frozen > 20_000
        assert yaml.__with_libyaml__  # else START keeps the pure Python loader and this proves less
        assert defaults == dask.config.defaults and len(defaults) >= 2
        assert safe_load == yaml.safe_load.__qualname__ == "safe_load"
        a.ask("stop", procs=[proc], grace=5)
    finally:
        a.close()
    assert not _marked(proc)
