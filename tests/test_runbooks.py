"""The runbooks in docs/runbooks/, run as written: their commands are read out of the Markdown files,
placeholders filled with lab values, and run in order with the real CLI in a real shell against the
SSH lab; then each test checks the outcome its runbook promises. docs/runbooks/README.md describes
the format (console blocks, ``# exits N``, placeholders, inventory edits, ``<!-- lab: ... -->``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from conftest import clean, dask_processes, prefixed

RUNBOOK_DIR = Path(__file__).resolve().parent.parent / "docs" / "runbooks"
RUNBOOKS = ("new-cluster.md", "add-worker-host.md", "replace-dead-worker-host.md", "scheduler-crash.md",
            "rotate-tls-certificates.md", "upgrade-dask.md", "bug-report.md", "long-training.md",
            "fabric-and-ansible.md")
PLACEHOLDERS = {"SCHEDULER_HOST", "NEW_HOST", "DEAD_HOST", "DASK_VERSION", "JOB_ID"}  # and inventory.yaml
EVENTS = {"DEAD_HOST answers again"}

PLACEHOLDER = re.compile(r"(?<![\w${])[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b")  # $NAME, ${NAME}: shell variables
INVENTORY = re.compile(r"(?<![\w./-])inventory\.yaml\b")
EXITS = re.compile(r"\s#\s*exits\s+(\d+)\b")
EDIT = re.compile(r"#\s*inventory\.yaml:\s*(add to workers|remove from workers|set [A-Za-z_]+)\s*$")
EVENT = re.compile(r"<!--\s*lab:\s*(.*?)\s*-->")
FENCE = re.compile(r"```(\w*)\s*$")
DETACHED = re.compile(r"\bclusterctl submit\b.*\s(?:--detach|-d)\b", re.S)  # its output names the job id
SUBMITTED = re.compile(r"^job (\S+) (?:queued|running|succeeded|failed|stopped) on ", re.M)


# -- reading a runbook -----------------------------------------------------------------------------

@dataclass
class Step:
    kind: str  # run | edit | event
    text: str  # the command (continuation lines included), the yaml body, or the event
    line: int
    expect: int = 0  # run: the exit status the runbook promises
    edit: str = ""  # edit: "add to workers" | "remove from workers" | "set KEY"


def parse(text: str) -> list[Step]:
    steps: list[Step] = []
    lang: str | None = None  # inside a fenced block: its info string
    block: list[tuple[int, str]] = []
    command: Step | None = None  # a command continued with a trailing backslash
    for no, line in enumerate(text.splitlines(), 1):
        # Nothing a reader would run may be skipped here without a word: an indented fence, or a
        # '$ ' line in a block that is not ```console.
        assert not (line[:1].isspace() and line.lstrip().startswith("```")), f"line {no}: indented fence"
        if lang is None:
            fence = FENCE.match(line)
            if fence:
                lang, block = fence.group(1), []
            else:
                steps += [Step("event", m.group(1), no) for m in EVENT.finditer(line)]
            continue
        if line.rstrip() == "```":
            assert command is None, f"line {command.line}: the command's last line ends with a backslash"
            if lang == "yaml" and block:
                edit = EDIT.match(block[0][1].strip())
                if edit:
                    steps.append(Step("edit", "\n".join(b for _, b in block[1:]), block[0][0], edit=edit.group(1)))
            lang = None
            continue
        block.append((no, line))
        if lang != "console":
            assert not line.startswith("$ "), f"line {no}: a command in a ```{lang} block, not ```console"
            continue
        if command is not None:
            command.text += "\n" + line
        elif line.startswith("$ "):
            command = Step("run", line[2:], no)
        if command is not None and not line.endswith("\\"):
            last = EXITS.search(command.text.splitlines()[-1])
            command.expect = int(last.group(1)) if last else 0
            steps.append(command)
            command = None
    assert lang is None, "a fenced block is not closed"
    return steps


def runbook(name: str) -> tuple[str, list[Step]]:
    text = (RUNBOOK_DIR / name).read_text()
    return text, parse(text)


def substitute(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        pattern = INVENTORY if key == "inventory.yaml" else re.compile(rf"(?<![\w${{]){key}\b")
        text = pattern.sub(lambda _: value, text)
    return text


def left_over(text: str) -> list[str]:
    return PLACEHOLDER.findall(text) + INVENTORY.findall(text)


def submitted_id(out: str) -> str:
    """The job id that ``clusterctl submit ... --detach`` printed (its line, or its --json object)."""
    found = SUBMITTED.search(out)
    if found:
        return found.group(1)
    return json.loads(out)["job_id"]


def apply_edit(inventory: Path, edit: str, body: str) -> None:
    doc = yaml.safe_load(inventory.read_text())
    value = yaml.safe_load(body)
    if edit == "add to workers":
        assert isinstance(value, list), f"{edit}: the block must be a YAML list"
        doc["workers"] = (doc.get("workers") or []) + value
    elif edit == "remove from workers":
        gone = {item["host"] for item in value}
        assert gone <= {w["host"] for w in doc["workers"]}, f"{edit}: {gone} not all in the inventory"
        doc["workers"] = [w for w in doc["workers"] if w["host"] not in gone]
    else:
        doc[edit.split()[1]] = value
    inventory.write_text(yaml.safe_dump(doc, sort_keys=False))


# -- running one ----------------------------------------------------------------------------------

@dataclass
class Ran:
    command: str
    code: int
    out: str
    err: str


class Shell:
    """Runs a runbook's commands like an operator would: bash, `clusterctl` and `python` on the PATH
    (this test's interpreter), the lab's CLUSTERCTL_HOME, one working folder."""

    def __init__(self, root: Path, home: Path):
        bin_dir = root / "bin"
        bin_dir.mkdir()
        for name, prefix in (("clusterctl", "-m clusterctl "), ("python", "")):
            script = bin_dir / name
            script.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {prefix}"$@"\n')
            script.chmod(0o755)
        self.work = root / "work"
        self.work.mkdir()
        # pip may look but never install on this machine: no index, no find-links, no config files.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        self.env.update(CLUSTERCTL_HOME=str(home), COLUMNS="200", PATH=f"{bin_dir}:{os.environ['PATH']}",
                        PIP_NO_INDEX="1", PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")

    def run(self, name: str, values: dict[str, str], inventory: Path, events: dict | None = None) -> list[Ran]:
        _, steps = runbook(name)
        assert any(s.kind == "run" for s in steps), f"{name}: no commands (```console blocks with '$ ' lines)"
        values = dict(values)  # JOB_ID: the id the latest 'submit --detach' printed, once one ran
        ran: list[Ran] = []
        for step in steps:
            where = f"{name}:{step.line}"
            if step.kind == "event":
                assert step.text in (events or {}), f"{where}: the test does not know the event {step.text!r}"
                events[step.text]()
                continue
            text = substitute(step.text, values)
            assert not left_over(text), f"{where}: placeholder(s) {left_over(text)} left in {text!r}"
            if step.kind == "edit":
                apply_edit(inventory, step.edit, text)
                continue
            proc = subprocess.run(["bash", "-c", text], cwd=self.work, env=self.env, capture_output=True,
                                  text=True, timeout=300)
            said = f"{where}: $ {text}\n-- exit {proc.returncode}\n-- stdout:\n{proc.stdout}\n-- stderr:\n{proc.stderr}"
            assert "Traceback" not in proc.stdout + proc.stderr, said
            assert proc.returncode == step.expect, f"the runbook says exit {step.expect}\n{said}"
            ran.append(Ran(text, proc.returncode, proc.stdout, proc.stderr))
            if DETACHED.search(text) and proc.returncode == 0:
                values["JOB_ID"] = submitted_id(proc.stdout)
        return ran


def one(ran: list[Ran], start: str) -> Ran:
    found = [r for r in ran if r.command.startswith(start)]
    assert len(found) == 1, f"expected one command starting with {start!r}, ran: {[r.command for r in ran]}"
    return found[0]


# -- the files themselves (no lab needed) ---------------------------------------------------------

def test_the_runbooks_are_the_listed_ones_each_with_its_lab_test():
    files = sorted(p.name for p in RUNBOOK_DIR.glob("*.md") if p.name != "README.md")
    assert files == sorted(RUNBOOKS)
    index = (RUNBOOK_DIR / "README.md").read_text()
    for name in RUNBOOKS:
        assert f"]({name})" in index, f"{name} is not linked from docs/runbooks/README.md"
        assert callable(globals().get("test_runbook_" + name[:-3].replace("-", "_"))), f"{name} has no test"


@pytest.mark.parametrize("name", RUNBOOKS)
def test_runbook_is_well_formed(name):
    text, steps = runbook(name)
    assert [s for s in steps if s.kind == "run"], f"{name}: no commands"
    for heading in ("**Starting point:**", "**Outcome:**", "## What the test covers"):
        assert heading in text, f"{name}: no {heading}"
    for step in steps:
        if step.kind == "event":
            assert step.text in EVENTS, f"{name}:{step.line}: unknown event {step.text!r}"
            continue
        unknown = set(PLACEHOLDER.findall(step.text)) - PLACEHOLDERS
        assert not unknown, f"{name}:{step.line}: unknown placeholder(s) {unknown} in {step.text!r}"
        if step.kind == "edit":
            value = yaml.safe_load(step.text)
            assert value is not None, f"{name}:{step.line}: empty inventory edit"
            if step.edit != "set setup" and step.edit.startswith("set "):
                pytest.fail(f"{name}:{step.line}: only 'set setup' is tested, got {step.edit!r}")


def test_parser_reads_commands_continuations_exit_codes_edits_and_events():
    sample = (
        "intro `$ not a command`\n<!-- lab: NEW_HOST is ready -->\n"
        "```console\n$ clusterctl status    # exits 3: a worker is down\nname  host\n"
        "$ clusterctl exec -- \\\n  'ls {workdir}'\n[10.0.0.1] log\n```\n"
        "```yaml\nname: just an illustration\n```\n"
        "```yaml\n# inventory.yaml: add to workers\n- host: NEW_HOST\n```\n"
        "```console\n$ clusterctl up inventory.yaml\n```\n")
    steps = parse(sample)
    assert [(s.kind, s.text, s.expect, s.edit) for s in steps] == [
        ("event", "NEW_HOST is ready", 0, ""),
        ("run", "clusterctl status    # exits 3: a worker is down", 3, ""),
        ("run", "clusterctl exec -- \\\n  'ls {workdir}'", 0, ""),
        ("edit", "- host: NEW_HOST", 0, "add to workers"),
        ("run", "clusterctl up inventory.yaml", 0, ""),
    ]
    filled = substitute("clusterctl up inventory.yaml && echo NEW_HOST $CLUSTERCTL_HOME ${NEW_HOST:-x}",
                        {"inventory.yaml": "/tmp/lab.yaml", "NEW_HOST": "10.0.0.9"})
    assert filled == "clusterctl up /tmp/lab.yaml && echo 10.0.0.9 $CLUSTERCTL_HOME ${NEW_HOST:-x}"
    assert left_over(filled) == [] and left_over("echo DEAD_HOST my-inventory.yaml inventory.yaml") == [
        "DEAD_HOST", "inventory.yaml"]
    assert submitted_id("job trivial-20261203-232523-fd86 running on 10.0.0.1 (lab)\n") == "trivial-20261203-232523-fd86"
    assert submitted_id('{"job_id": "t-1", "cluster": "lab", "status": "queued", "host": "h"}') == "t-1"
    assert DETACHED.search("clusterctl submit tests/jobs/trivial.py --detach -p n=4")
    assert not DETACHED.search("clusterctl submit jobs/example.py -p detach=1")
    for hidden in ("- step:\n  ```console\n  $ clusterctl up\n  ```\n", "```bash\n$ clusterctl up\n```\n",
                   "```console\n$ clusterctl exec -- \\\n```\n", "```console\n$ clusterctl up\n"):
        with pytest.raises(AssertionError):  # a command that would be skipped is an error, not a pass
            parse(hidden)


# -- on the lab -----------------------------------------------------------------------------------

@pytest.fixture
def shell(tmp_path, ssh_cli):
    return Shell(tmp_path, ssh_cli.home)


@pytest.fixture
def cluster(lab, ssh_cli, write_inventory):
    """make(name, workers, **extra) -> an inventory of the lab; afterwards every link is up again and
    the cluster is stopped, so that the next runbook starts on idle hosts (the lab has 2 cores)."""
    made: list[Path] = []

    def make(name: str, workers: list[str], **extra) -> Path:
        made.append(write_inventory(workers, name=name, **extra))
        return made[-1]

    yield make
    for host in lab.hosts:
        lab.link_up(host)
    for inv in made:
        ssh_cli("down", "--force", "--inventory", inv)


def up(ssh_cli, inv: Path) -> dict:
    started = ssh_cli("up", inv)
    assert started.code == 0, started.out + started.err
    status = ssh_cli("status", "--json")
    assert status.code == 0, status.out + status.err
    return status.json


def pids(status: dict) -> dict[str, int]:
    return {"scheduler": status["scheduler"]["pid"], **{w["name"]: w["pid"] for w in status["workers"]}}


def kill_worker(lab, ssh_cli, host, cluster: str) -> None:
    """SIGKILL to a worker's whole process group (the nanny and the worker it forked)."""
    pid = next(w["pid"] for w in ssh_cli("status", "--json").json["workers"] if w["host"] == host.addr)
    killed = lab.ssh(host, f"kill -9 -- -{pid}")
    assert killed.returncode == 0, killed.stderr
    deadline = time.monotonic() + 10
    while dask_processes(lab, host, cluster) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert dask_processes(lab, host, cluster) == []


@pytest.mark.lab
def test_runbook_new_cluster(lab, ssh_cli, cluster, shell):
    s, w1, w2 = lab.hosts[:3]
    inv = cluster("rb-new", [w1.addr, w2.addr])
    ran = shell.run("new-cluster.md", {"inventory.yaml": str(inv), "SCHEDULER_HOST": s.addr}, inv)
    commands = [r.command.split()[:2] for r in ran]
    assert commands.index(["clusterctl", "doctor"]) < commands.index(["clusterctl", "up"])  # checked first
    status = ssh_cli("status", "--json")
    assert status.code == 0, status.out
    assert status.json["scheduler"]["host"] == s.addr and status.json["scheduler"]["alive"] is True
    assert [(w["host"], w["registered"]) for w in status.json["workers"]] == [(w1.addr, True), (w2.addr, True)]
    assert any("dask scheduler" in a for a in dask_processes(lab, s, "rb-new"))
    assert all(any("dask worker" in a for a in dask_processes(lab, h, "rb-new")) for h in (w1, w2))
    assert clean(lab, lab.hosts[3:], cluster="rb-new")
    cores = prefixed(one(ran, "clusterctl exec --role worker").out)
    assert set(cores) == {w1.addr, w2.addr} and all(v[0].isdigit() for v in cores.values())


@pytest.mark.lab
def test_runbook_add_worker_host(lab, ssh_cli, cluster, shell):
    s, w1, w2, new = lab.hosts[:4]
    inv = cluster("rb-add", [w1.addr, w2.addr])
    before = pids(up(ssh_cli, inv))
    ran = shell.run("add-worker-host.md", {"inventory.yaml": str(inv), "NEW_HOST": new.addr}, inv)
    doctor = one(ran, "clusterctl doctor").out.splitlines()
    assert any(new.addr in line and "listening" in line for line in doctor), "\n".join(doctor)
    status = ssh_cli("status", "--json")
    assert status.code == 0, status.out
    assert [(w["host"], w["registered"]) for w in status.json["workers"]] == [
        (w1.addr, True), (w2.addr, True), (new.addr, True)]
    after = pids(status.json)
    assert {k: after[k] for k in before} == before  # nothing that ran was restarted
    assert any("dask worker" in a for a in dask_processes(lab, new, "rb-add"))


@pytest.mark.lab
def test_runbook_replace_dead_worker_host(lab, ssh_cli, cluster, shell):
    s, w1, dead, new = lab.hosts[:4]
    inv = cluster("rb-replace", [w1.addr, dead.addr])
    before = pids(up(ssh_cli, inv))
    kill_worker(lab, ssh_cli, dead, "rb-replace")  # the host dies: its processes and its network
    lab.link_down(dead)

    def dead_host_answers_again():
        # While it was cut off: the new worker works, the others kept running, the dead one is listed.
        status = ssh_cli("status", "--json")
        assert status.code == 0, status.out
        rows = {w["host"]: w for w in status.json["workers"]}
        assert set(rows) == {w1.addr, new.addr}
        assert rows[new.addr]["registered"] and rows[w1.addr]["registered"]
        assert [d["host"] for d in status.json["detached"]] == [dead.addr]
        assert status.json["scheduler"]["pid"] == before["scheduler"] and rows[w1.addr]["pid"] == before[
            f"{w1.addr}-worker-0"]
        lab.link_up(dead)  # rebooted: reachable again, nothing of the cluster running on it

    values = {"inventory.yaml": str(inv), "DEAD_HOST": dead.addr, "NEW_HOST": new.addr}
    shell.run("replace-dead-worker-host.md", values, inv, {"DEAD_HOST answers again": dead_host_answers_again})
    status = ssh_cli("status", "--json")
    assert status.code == 0, status.out
    assert [(w["host"], w["registered"]) for w in status.json["workers"]] == [(w1.addr, True), (new.addr, True)]
    assert status.json["unreachable"] == {} and status.json["scheduler"]["pid"] == before["scheduler"]
    assert status.json["detached"] == []
    assert clean(lab, [dead], cluster="rb-replace")


@pytest.mark.lab
def test_runbook_scheduler_crash(lab, ssh_cli, cluster, shell):
    s, w1, w2 = lab.hosts[:3]
    inv = cluster("rb-crash", [w1.addr, w2.addr])
    before = pids(up(ssh_cli, inv))
    assert lab.ssh(s, f"kill -9 {before['scheduler']}").returncode == 0
    shell.run("scheduler-crash.md", {"inventory.yaml": str(inv), "SCHEDULER_HOST": s.addr}, inv)
    status = ssh_cli("status", "--json")
    assert status.code == 0, status.out
    assert all(w["registered"] for w in status.json["workers"]) and len(status.json["workers"]) == 2
    after = pids(status.json)
    assert set(after) == set(before) and all(after[k] != before[k] for k in before)  # all new processes
    for host in (w1, w2):  # and nothing of the old workers is left: only the new nanny and its worker
        nanny = after[f"{host.addr}-worker-0"]
        ps = lab.ssh(host, "ps -eo pid=,ppid=,args=").stdout.splitlines()
        mine = [line.split(None, 2) for line in ps if "/rb-crash/" in line]
        assert mine and all(int(pid) == nanny or int(ppid) == nanny for pid, ppid, _ in mine), ps


def _connects(address: str, ca, cert, key) -> bool:
    from distributed import Client
    from distributed.security import Security

    sec = Security(tls_ca_file=str(ca), tls_client_cert=str(cert), tls_client_key=str(key),
                   require_encryption=True)
    try:
        with Client(address, security=sec, timeout=5) as client:
            return "workers" in client.scheduler_info()
    except Exception:
        return False


@pytest.mark.lab
def test_runbook_rotate_tls_certificates(lab, ssh_cli, cluster, shell, tmp_path):
    hosts = lab.hosts[:3]
    inv = cluster("rb-rotate", [h.addr for h in hosts[1:]])
    before = pids(up(ssh_cli, inv))
    state_file = ssh_cli.home / "clusters" / "rb-rotate" / "state.json"
    old = json.loads(state_file.read_text())["tls"]
    kept = tmp_path / "old-tls"
    kept.mkdir()
    for part in ("ca", "cert", "key"):
        (kept / part).write_bytes(Path(old[part]).read_bytes())
    ran = shell.run("rotate-tls-certificates.md", {"inventory.yaml": str(inv)}, inv)
    new = json.loads(state_file.read_text())
    assert new["tls"]["fingerprint"] != old["fingerprint"]
    status = ssh_cli("status", "--json")
    assert status.code == 0 and all(w["registered"] for w in status.json["workers"]), status.out
    after = pids(status.json)
    assert set(after) == set(before) and all(after[k] != before[k] for k in before)
    listing = prefixed(one(ran, "clusterctl exec").out)
    assert set(listing) == {h.addr for h in hosts}
    files = [line.split() for lines in listing.values() for line in lines if line.endswith(".pem")]
    assert files and all(f[0] == "-rw-------" for f in files), listing
    address = new["scheduler_address"]
    assert not _connects(address, kept / "ca", kept / "cert", kept / "key")
    assert _connects(address, new["tls"]["ca"], new["tls"]["cert"], new["tls"]["key"])


OLD_DASK = "2024.8.0"


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    """dask + distributed wheels: the old release one host starts with, and the client's release."""
    root = tmp_path_factory.mktemp("wheels")
    out = {}
    for label, ver in (("old", OLD_DASK), ("new", version("dask"))):
        pip = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(root / label),
                              f"dask=={ver}", f"distributed=={ver}"], capture_output=True, text=True, timeout=300)
        if pip.returncode != 0:
            reason = f"cannot download dask/distributed {ver} wheels: {pip.stderr.strip()[-300:]}"
            if os.environ.get("CI") == "true":
                pytest.fail(reason)
            pytest.skip(reason)
        out[label] = sorted((root / label).glob("*.whl"))
        assert len(out[label]) == 2, out[label]
    return out


def own_environment(root: Path, wheel_dir: Path) -> Path:
    """A virtual environment that sees this test's packages (a .pth line) but installs into itself,
    and whose pip uses only the wheels in ``wheel_dir`` (the lab hosts have no internet)."""
    made = subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    python = root / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    shared = [p for p in sys.path if p.endswith("site-packages")]
    Path(purelib, "shared-test-env.pth").write_text("\n".join(shared) + "\n")
    (root / "pip.conf").write_text(f"[global]\nno-index = true\nfind-links = {wheel_dir}\n"
                                   "disable-pip-version-check = true\n")
    return python


def versions_of(python: Path) -> tuple[str, str]:
    out = subprocess.run([python, "-c", "import dask, distributed; print(dask.__version__, distributed.__version__)"],
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0], out[1]


@pytest.mark.lab
def test_runbook_upgrade_dask(lab, ssh_cli, cluster, shell, tmp_path, wheels):
    target = version("dask")
    assert version("distributed") == target  # released together: one DASK_VERSION for both
    s, w1, odd = lab.hosts[:3]
    python = own_environment(tmp_path / "odd-env", wheels["new"][0].parent)
    inv = cluster("rb-upgrade", [w1.addr], extra_worker=f"  - host: {odd.addr}\n    python: {python}\n"
                  "    nthreads: 1\n    memory_limit: 1GiB\n")
    up(ssh_cli, inv)
    # The odd host now has the old release in its own environment, as if it had not been upgraded.
    old = subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", *wheels["old"]],
                         capture_output=True, text=True, env={k: v for k, v in os.environ.items()
                                                              if not k.startswith("PIP_")})
    assert old.returncode == 0, old.stderr
    assert versions_of(python) == (OLD_DASK, OLD_DASK)

    ran = shell.run("upgrade-dask.md", {"inventory.yaml": str(inv), "DASK_VERSION": target}, inv)
    doctors = [r for r in ran if r.command.startswith("clusterctl doctor")]
    assert len(doctors) == 2 and f"[{odd.addr}] dask {OLD_DASK} differs" in doctors[0].err  # after: exit 0
    setup = prefixed(one(ran, "clusterctl setup").out)
    assert any(f"Successfully installed dask-{target} distributed-{target}" in line for line in setup[odd.addr])
    for host in (s, w1):  # the shared environment already had it: pip changed nothing there
        assert not any("Successfully installed" in line for line in setup[host.addr]), setup[host.addr]
        assert any(f"Requirement already satisfied: dask=={target}" in line for line in setup[host.addr])
    assert versions_of(python) == (target, target)
    assert version("dask") == target  # and the client's environment is as it was

    status = ssh_cli("status", "--json")
    assert status.code == 0 and all(w["registered"] for w in status.json["workers"]), status.out
    # The worker now running on the odd host imports the new release (asked through the scheduler).
    from distributed import Client
    from distributed.security import Security

    state = json.loads((ssh_cli.home / "clusters" / "rb-upgrade" / "state.json").read_text())
    sec = Security(tls_ca_file=state["tls"]["ca"], tls_client_cert=state["tls"]["cert"],
                   tls_client_key=state["tls"]["key"], require_encryption=True)
    with Client(state["scheduler_address"], security=sec, timeout=10) as client:
        workers = client.get_versions()["workers"]
    assert len(workers) == 2 and {v["packages"]["dask"] for v in workers.values()} == {target}


@pytest.mark.lab
def test_runbook_bug_report(lab, ssh_cli, cluster, shell):
    s, w1, w2 = lab.hosts[:3]
    inv = cluster("rb-report", [w1.addr, w2.addr])
    up(ssh_cli, inv)
    kill_worker(lab, ssh_cli, w2, "rb-report")
    shell.run("bug-report.md", {"inventory.yaml": str(inv)}, inv)
    dask = version("dask")
    with tarfile.open(shell.work / "clusterctl-report.tar.gz") as tar:
        files = {Path(m.name).name: tar.extractfile(m).read().decode() for m in tar.getmembers() if m.isfile()}
    assert {"status.json", "logs.txt", "doctor.json", "hosts.txt", "client-packages.txt", inv.name} <= set(files)
    status = json.loads(files["status.json"])
    rows = {w["host"]: w for w in status["workers"]}
    assert rows[w2.addr]["alive"] is False and rows[w1.addr]["registered"] is True
    logs = prefixed(files["logs.txt"])
    assert {f"{s.addr}-scheduler", f"{w1.addr}-worker-0", f"{w2.addr}-worker-0"} <= set(logs)
    doctor = json.loads(files["doctor.json"])
    assert {r["host"]: r["versions"]["dask"] for r in doctor["rows"]} == {h.addr: dask for h in (s, w1, w2)}
    hosts = prefixed(files["hosts.txt"])
    for h in (s, w1, w2):
        assert f"dask=={dask}" in hosts[h.addr] and any(line.startswith("Linux ") for line in hosts[h.addr])
    assert f"dask=={dask}" in files["client-packages.txt"].splitlines()
    assert files[inv.name] == inv.read_text()
    assert not any("PRIVATE KEY" in text for text in files.values())


@pytest.mark.lab
@pytest.mark.slow  # among the slowest lab tests (~30-45 s): make test and CI run it
def test_runbook_long_training(lab, ssh_cli, cluster, shell, workdir):
    s, w1, w2 = lab.hosts[:3]
    inv = cluster("rb-train", [w1.addr, w2.addr])
    up(ssh_cli, inv)
    # The runbook's job is the repository's tests/jobs/trivial.py, relative to the working folder.
    shutil.copytree(Path(__file__).resolve().parent / "jobs", shell.work / "tests" / "jobs",
                    ignore=shutil.ignore_patterns("__pycache__"))
    ran = shell.run("long-training.md", {"inventory.yaml": str(inv)}, inv)
    ids = [submitted_id(r.out) for r in ran if DETACHED.search(r.command)]
    assert len(ids) == 3 and len(set(ids)) == 3, ids
    trained, forced, stopped = ids

    records = workdir / "rb-train" / "jobs"  # the lab's hosts share this machine's filesystem

    def record(job_id: str) -> tuple[dict, dict]:
        folder = records / job_id
        return json.loads((folder / "spec.json").read_text()), json.loads((folder / "status.json").read_text())

    spec, status = record(trained)
    assert spec["host"] == s.addr and status["status"] == "succeeded", status
    result = json.loads((shell.work / "runs" / trained / "result.json").read_text())
    assert result["job_id"] == trained and result["params"] == {"n": 40, "sleep": 0.5}
    assert result["result"]["total"] == sum(i * i for i in range(40)) and result["result"]["n_workers"] == 2
    assert (shell.work / "runs" / trained / "numbers.txt").read_text() == "0 1 4 9\n"
    assert "squaring 40 numbers" in one(ran, f"clusterctl jobs logs {trained} --follow").out
    for job_id in (forced, stopped):
        _, status = record(job_id)
        assert status["status"] == "stopped" and status["ended"], (job_id, status)
    assert f"job {stopped} stopped" in one(ran, f"clusterctl jobs stop {stopped}").out
    refused = [r for r in ran if r.command.startswith("clusterctl down ") and r.code == 1]
    assert len(refused) == 1 and forced in refused[0].err and stopped not in refused[0].err, refused
    assert f"stopped the jobs {forced} first" in one(ran, "clusterctl down --force").out
    # No driver left anywhere, nothing of the cluster on any host, and the cluster is forgotten.
    assert not any("clusterctl.driver" in args for h in lab.hosts for _, args in lab.processes(h))
    assert clean(lab, lab.hosts, cluster="rb-train")
    assert not (ssh_cli.home / "clusters" / "rb-train" / "state.json").exists()
    assert ssh_cli("status", "--cluster", "rb-train").code == 1


@pytest.mark.lab
def test_runbook_fabric_and_ansible(lab, ssh_cli, cluster, shell):
    s, w1, w2 = lab.hosts[:3]
    inv = cluster("rb-fabric", [w1.addr, w2.addr])
    up(ssh_cli, inv)
    ran = shell.run("fabric-and-ansible.md", {"inventory.yaml": str(inv)}, inv)
    assert one(ran, "clusterctl inventory check").out.startswith(f"{inv}: valid: cluster rb-fabric")
    hosts = yaml.safe_load((shell.work / "hosts.yml").read_text())["all"]
    assert hosts["vars"] == {"clusterctl_cluster": "rb-fabric"}
    assert list(hosts["children"]["scheduler"]["hosts"]) == [s.addr]
    workers = hosts["children"]["workers"]["hosts"]
    assert sorted(workers) == sorted([w1.addr, w2.addr])
    for row in workers.values():
        assert row["ansible_user"] == "root" and row["ansible_ssh_private_key_file"] == str(lab.key)
        assert row["ansible_python_interpreter"] == sys.executable and row["clusterctl_nthreads"] == 1
    lines = one(ran, "python -c").out.splitlines()
    assert sorted(line.split()[0] for line in lines) == sorted([w1.addr, w2.addr]), lines
    assert all(line.split()[-1].startswith("/") and line.split()[-2].endswith("%") for line in lines), lines
    # A host key clusterctl has not recorded is refused, not added (Fabric's own default adds it).
    known = ssh_cli.home / "known_hosts"
    known.rename(known.with_suffix(".aside"))
    try:
        probe = subprocess.run([sys.executable, "-c", "import clusterctl, fabric\ntry:\n"
                                " clusterctl.fabric_group(role='worker').run('true', hide=True)\n"
                                "except fabric.exceptions.GroupException as e:\n"
                                " print(sorted(type(x).__name__ for x in e.result.values()))"],
                               env={**os.environ, "CLUSTERCTL_HOME": str(ssh_cli.home)},
                               capture_output=True, text=True, timeout=60)
    finally:
        known.with_suffix(".aside").rename(known)
    assert probe.stdout.strip() == "['SSHException', 'SSHException']", probe.stdout + probe.stderr
    assert not known.with_suffix(".aside").exists() and "PRIVATE" not in known.read_text()
