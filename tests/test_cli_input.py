"""The real CLI, as a subprocess, on bad input and with nothing up. Nothing here starts Dask."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

BAD_INVENTORY = """\
name: c
scheduler:
  host: 127.0.0.1
  port: 8786
  dashboard_port: 8786
workers:
  - host: 127.0.0.1
    nthreads: "4"
    colour: blue
"""
BAD_PROBLEMS = [
    "5: scheduler.dashboard_port: same as scheduler.port (8786)",
    "8: workers[0].nthreads: Input should be a valid integer",
    "9: workers[0].colour: unknown key",
]


@dataclass
class Ran:
    code: int
    out: str
    err: str
    seconds: float


@pytest.fixture
def home(tmp_path) -> Path:
    h = tmp_path / "cchome"
    h.mkdir()
    yield h
    # whatever a test ran, it recorded no cluster: nothing was started
    assert not list(h.glob("clusters/*/state.json"))


def clusterctl(home: Path, *args: str, cwd: Path | None = None) -> Ran:
    env = {**os.environ, "CLUSTERCTL_HOME": str(home), "COLUMNS": "200"}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "clusterctl", *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60)
    ran = Ran(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - t0)
    assert "Traceback" not in ran.out + ran.err, ran.out + ran.err
    return ran


def test_bad_inventory_lists_every_problem_and_exits_2(home, tmp_path):
    inv = tmp_path / "bad.yaml"
    inv.write_text(BAD_INVENTORY)
    r = clusterctl(home, "up", inv)
    assert r.code == 2, r
    assert f"{inv}: 3 problems; nothing was started" in r.err
    for problem in BAD_PROBLEMS:
        assert f"{inv}:{problem}" in r.err, r.err
    assert not (home / "clusters").exists()


def test_bad_inventory_as_json(home, tmp_path):
    inv = tmp_path / "bad.yaml"
    inv.write_text(BAD_INVENTORY)
    r = clusterctl(home, "up", inv, "--json")
    assert r.code == 2
    obj = json.loads(r.out)  # the whole of stdout is one JSON object
    assert isinstance(obj, dict)
    assert obj["error"] == f"{inv}: 3 problems; nothing was started"
    assert len(obj["details"]) == 3
    for detail, problem in zip(obj["details"], BAD_PROBLEMS):
        assert detail.startswith(f"{inv}:{problem}"), detail
    assert obj["exit_code"] == 2


def test_invalid_yaml_exits_2(home, tmp_path):
    inv = tmp_path / "broken.yaml"
    inv.write_text("scheduler:\n  host: a\n port: 1\n")
    r = clusterctl(home, "up", inv)
    assert r.code == 2
    assert f"{inv}:3: not valid YAML" in r.err


def test_missing_inventory_exits_2(home, tmp_path):
    missing = tmp_path / "nope.yaml"
    r = clusterctl(home, "up", missing)
    assert r.code == 2
    assert f"cannot read inventory {missing}" in r.err
    r = clusterctl(home, "up", missing, "--json")
    assert r.code == 2
    assert json.loads(r.out)["error"].startswith(f"cannot read inventory {missing}")


def test_down_checks_the_inventory_too(home, tmp_path):
    inv = tmp_path / "bad.yaml"
    inv.write_text(BAD_INVENTORY)
    r = clusterctl(home, "down", "--force", "--inventory", inv)
    assert r.code == 2
    assert f"{inv}:{BAD_PROBLEMS[0]}" in r.err


def test_down_inventory_without_force_is_refused(home):
    inv = Path(__file__).resolve().parents[1] / "inventory" / "local.yaml"
    r = clusterctl(home, "down", "--inventory", inv)
    assert r.code == 2
    assert "--inventory is only used with --force" in r.err


@pytest.mark.parametrize("command", ["status", "logs"])
def test_status_and_logs_with_nothing_up(home, command):
    r = clusterctl(home, command)
    assert r.code == 1
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err
    assert "no cluster is up" in lines[0] and "clusterctl up" in lines[0]
    assert r.out == ""


@pytest.mark.parametrize("command", ["status", "logs"])
def test_status_and_logs_with_nothing_up_as_json(home, command):
    r = clusterctl(home, command, "--json")
    assert r.code == 1
    obj = json.loads(r.out)
    assert "clusterctl up" in obj["error"] and obj["exit_code"] == 1


def test_status_of_a_named_cluster_that_is_not_up(home):
    r = clusterctl(home, "status", "--cluster", "ghost")
    assert r.code == 1
    assert "'ghost' is not up" in r.err and "clusterctl up" in r.err


def test_down_with_nothing_up(home):
    r = clusterctl(home, "down")
    assert r.code == 0
    assert "nothing to stop" in r.out
    r = clusterctl(home, "down", "--json")
    assert r.code == 0
    obj = json.loads(r.out)
    assert obj["nothing"] is True and obj["exit_code"] == 0


def test_corrupted_state_file(home):
    path = home / "clusters" / "x" / "state.json"
    path.parent.mkdir(parents=True)
    path.write_text("{ this is not json")
    (home / "current").write_text("x\n")
    r = clusterctl(home, "status")
    assert r.code == 1
    assert str(path) in r.err
    assert "down --force --inventory" in r.err
    r = clusterctl(home, "status", "--json")
    assert r.code == 1
    assert str(path) in json.loads(r.out)["error"]
    path.unlink()  # for the fixture's check: the garbage was ours


COMMANDS = [[], ["up"], ["status"], ["logs"], ["down"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "(top)")
def test_help_works_and_is_fast(home, command):
    r = clusterctl(home, *command, "--help")
    assert r.code == 0, r.err
    assert "Usage:" in r.out
    if command:
        assert f"clusterctl {command[0]} [OPTIONS]" in r.out, r.out
    else:
        for sub in ("up", "status", "logs", "down"):
            assert sub in r.out
    assert r.seconds < 5, f"--help took {r.seconds:.1f}s"
    assert not (home / "clusters").exists()


def test_version_prints_the_package_version(home):
    from clusterctl import __version__

    r = clusterctl(home, "--version")
    assert r.code == 0 and r.out.strip() == f"clusterctl {__version__}"


def test_exec_help_shows_host_in_brackets(home):
    r = clusterctl(home, "exec", "--help")
    assert r.code == 0 and "[host]-prefixed output" in r.out, r.out


def test_importing_the_cli_does_not_import_the_heavy_modules():
    code = ("import sys; import clusterctl.cli; "
            "print([m for m in ('distributed', 'dask', 'asyncssh', 'pydantic', 'clusterctl.bringup', 'clusterctl.api')"
            " if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_unknown_command_and_option_are_usage_errors(home):
    r = clusterctl(home, "frobnicate")
    assert r.code == 2
    r = clusterctl(home, "status", "--no-such-option")
    assert r.code == 2


# -- messages are printed verbatim; names cannot escape the home ---------------------------------------------------------------------------------


def _clusterctl_raw(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CLUSTERCTL_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "clusterctl", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def test_error_message_with_brackets_prints_verbatim(home, tmp_path):
    missing = tmp_path / "[/]odd" / "inv.yaml"
    proc = _clusterctl_raw(home, "up", str(missing))
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.returncode == 2
    assert str(missing) in proc.stderr


def test_cluster_name_with_markup_is_printed_verbatim(home):
    proc = _clusterctl_raw(home, "status", "--cluster", "[bold]x")
    assert proc.returncode == 2  # not a usable cluster name: bad input
    assert "'[bold]x' is not a cluster name" in proc.stderr


def test_cluster_name_cannot_escape_the_home(home, tmp_path):
    proc = _clusterctl_raw(home, "down", "--cluster", "../../escaped")
    assert not (tmp_path / "escaped").exists()
    assert proc.returncode == 2


# -- found by tests/test_fuzz.py ---------------------------------------------------------------------

JOB = Path(__file__).resolve().parent / "jobs" / "trivial.py"


@pytest.mark.parametrize("param, message", [
    ("n=ten", "--param n=ten: not a valid int"),
    ("nope=1", "--param nope: job trivial has no such parameter"),
    ("scale=nan", "--param scale=nan: not a valid finite float"),
    ("sleep=inf", "--param sleep=inf: not a valid finite float"),
    ("label\x1b[2J=1", "--param 'label\\x1b[2J': job trivial has no such parameter"),
])
def test_bad_parameter_is_exit_2_with_nothing_up(home, tmp_path, param, message):
    # The cluster was looked up first: a bad parameter was exit 1 "no cluster is up" (and nan/inf
    # were accepted, to end up as NaN in result.json, which is not JSON).
    r = clusterctl(home, "submit", JOB, "-p", param, "-o", tmp_path / "run")
    assert r.code == 2, r
    assert r.err.startswith(f"error: {message}"), r.err
    assert len(r.err.splitlines()) == 1 and not (tmp_path / "run").exists()


def test_good_parameters_with_nothing_up_say_so(home, tmp_path):
    r = clusterctl(home, "submit", JOB, "-p", "n=3", "-p", "scale=1e3", "-o", tmp_path / "run")
    assert r.code == 1
    assert "no cluster is up" in r.err and len(r.err.splitlines()) == 1


def test_long_parameter_value_is_cut_in_the_message(home, tmp_path):
    r = clusterctl(home, "submit", JOB, "-p", "n=" + "9" * 5000, "-o", tmp_path / "run")
    assert r.code == 2
    assert len(r.err) < 200, r.err


def test_cluster_name_with_a_newline_is_refused(home):
    r = clusterctl(home, "status", "--cluster", "x\n")
    assert r.code == 2  # "$" let "x\n" through: a cluster directory named with a newline
    assert "is not a cluster name" in r.err


def test_inventory_that_is_not_utf8_is_bad_input(home, tmp_path):
    inv = tmp_path / "latin1.yaml"
    inv.write_bytes("name: café\nscheduler: {host: s}\nworkers: [{host: w}]\n".encode("latin-1"))
    for args in (["up", inv], ["down", "--force", "--inventory", inv]):
        r = clusterctl(home, *args)
        assert r.code == 2, r  # was exit 1: "unexpected error: UnicodeDecodeError"
        assert r.err == f"error: {inv}:1: not UTF-8 text (byte 0xe9); save the inventory as UTF-8\n"


def test_alias_bomb_is_bad_input_in_a_second(home, tmp_path):
    bomb = ["b0: &b0 [x, x, x, x, x, x, x, x, x]"]
    bomb += [f"b{i}: &b{i} [" + ", ".join([f"*b{i - 1}"] * 9) + "]" for i in range(1, 12)]
    inv = tmp_path / "bomb.yaml"
    inv.write_text("\n".join(bomb) + "\nscheduler: {host: s}\nworkers: *b11\n")
    r = clusterctl(home, "up", inv)
    assert r.code == 2  # was a hang
    assert r.seconds < 10 and "values once its aliases are expanded" in r.err
