"""Property-based tests (hypothesis) of the CLI's bad-input contract.

Thrown at the CLI: random inventories built valid, the shipped ones (``inventory/local.yaml``,
``inventory/example.yaml``), and those mutated (a key deleted, a value of the wrong type or range,
NUL and control characters, very long strings, unicode, bytes, dates, duplicated keys, tabs, non-UTF-8
bytes, anchors and aliases, alias bombs, recursive aliases, deep nesting, non-mapping tops, garbage),
to ``up`` and ``down --force --inventory``; and random ``--param`` lists to ``submit``.

The property, for input the CLI must refuse: exit code 2; one readable message on stderr (first
line ``error: ...`` naming the file; for inventory problems, every further line
``FILE:LINE: FIELD: message`` with a line inside the file); no traceback, no "unexpected error" (the
CLI's last line of defence, exit 1, which would hide an exception from a naive "no Traceback"
check), no ``debug.log``; ``--json`` gives one JSON object with ``exit_code: 2``; and nothing started:
no cluster directory or state under ``CLUSTERCTL_HOME`` (``up`` and ``down`` create the cluster's lock
before they contact any host) and no new process carrying the ``CLUSTERCTL_PROCESS`` marker or running
``dask`` that belongs to these tests.

Design, valid inventories: a valid inventory is not bad input: ``up`` would really start it (locally,
or by connecting to its hosts, up to their ``connect_timeout``), which is neither cheap nor this
property. So every document is first given to the loader in-process (``inventory.parse``):
- the loader raises ``InventoryError``: the document goes through the CLI as above;
- the loader raises anything else or takes over 2 s: a bug (this is how the fuzzer found them);
- the loader accepts it: the CLI is not run; instead the inventory must be usable by what comes
  after the loader, checked without contacting anything: ``spec.build`` and the state ``down --force``
  makes from it work, every command-line word and directory is free of NUL and control characters,
  process names, directories and host ids are unique, the state is strict JSON.
To keep that routing from hiding a loader that accepts bad input, each mutation also says whether it
makes the document invalid *by construction* (a port that is not an int in 1..65535, an unknown key,
a required key deleted, a NUL byte, invalid UTF-8, a duplicated key, an alias bomb...); for those the
loader must refuse and the CLI must exit 2. Mutations whose outcome depends on the rules (an unusual
host name, a memory limit) are "either": refused cleanly, or accepted and usable.

``submit`` runs with no cluster up, against ``tests/jobs/trivial.py`` (``n: int, scale: float,
fail: bool, label: str, sleep: float``): parameters are checked before the cluster is looked up, so
a bad one is exit 2 and a good list is exit 1 with the one-line "no cluster is up" -- never a job run.

The CLI runs in-process (click's test runner on the typer command, built once: ~2 ms a call instead
of ~0.6 s for a new interpreter), which still sees every exception: the CLI turns them into exit 1
and "unexpected error", which the property refuses. A few examples run the real
``python -m clusterctl`` as a subprocess too, with non-UTF-8 bytes in its arguments.

Reproducible: ``derandomize=True`` (examples derived from the test's source) and no example
database (nothing written into the repository). Budget: the file runs in well under a minute on
this project's 2-core machine.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings, strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

# Hypothesis keeps a cache under ./.hypothesis even without an example database: not in the repository.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "clusterctl-hypothesis")

from clusterctl import agent, inventory, spec
from clusterctl.cli import app
from clusterctl.errors import InventoryError

REPO = Path(__file__).resolve().parents[1]
TRIVIAL = REPO / "tests" / "jobs" / "trivial.py"
MARKER = agent.MARKER.encode() + b"="
TAG = "fuzz"  # in every generated name, file name and workdir: "our" processes are recognisable

FUZZ = settings(derandomize=True, database=None, deadline=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])
COMMAND = typer.main.get_command(app)  # built once; typer's own runner rebuilds it every call (80 ms)
RUNNER = CliRunner()

# -- what the loader accepts, written independently of it ------------------------------------------

HOST_SETTINGS = {"user", "ssh_port", "identity_file", "python", "workdir", "connection", "connect_timeout"}
WORKER_SETTINGS = {"nworkers", "nthreads", "memory_limit", "nanny", "start_method"}
# The mappings of issue 25, where this version of clusterctl has them: their rules (names, values,
# distributed's own option list) are too rich to restate, so the loader decides (must_refuse: False).
PROCESS_MAPPINGS = {"env", "dask_config"} & set(inventory._SchedulerEntry.model_fields)
WORKER_MAPPINGS = {"resources", "local_directory", "worker_options"} & set(inventory._WorkerEntry.model_fields)
SCHEDULER_MAPPINGS = {"scheduler_options"} & set(inventory._SchedulerEntry.model_fields)
KEYS = {
    # setup: shell commands for `clusterctl setup`, where this version of clusterctl has them
    "top": {"name", "tls", "defaults", "scheduler", "workers"}
    | ({"setup"} if "setup" in inventory._InventoryFile.model_fields else set()),
    "defaults": HOST_SETTINGS | WORKER_SETTINGS | PROCESS_MAPPINGS | WORKER_MAPPINGS | {"port"},
    "scheduler": HOST_SETTINGS | PROCESS_MAPPINGS | SCHEDULER_MAPPINGS | {"host", "port", "dashboard_port",
                                                                          "dashboard_host"},
    "worker": HOST_SETTINGS | WORKER_SETTINGS | PROCESS_MAPPINGS | WORKER_MAPPINGS | {"host", "port"},
}
NOT_NULLABLE = {("scheduler", "host"), ("scheduler", "port"), ("scheduler", "dashboard_port"),
                ("scheduler", "dashboard_host"), ("worker", "host")}


def _int_in(value, low, high) -> bool:
    return type(value) is int and low <= value <= high  # bool is an int to Python, not to the file


def must_refuse(section: str, key: str, value) -> bool:
    """True when ``section.key: value`` makes any inventory invalid, by the README's rules alone."""
    if key not in KEYS[section]:
        return True
    if value is None:
        return (section, key) in NOT_NULLABLE or (section == "top" and key in ("scheduler", "workers"))
    if key in ("port", "ssh_port", "dashboard_port"):
        return not _int_in(value, 1, 65535)
    if key == "nworkers":
        return not _int_in(value, 1, 1024)
    if key == "nthreads":
        return not _int_in(value, 1, 65536)
    if key == "connect_timeout":
        ok = type(value) in (int, float) and 0 < value <= 3600  # nan compares False: refused
        return not ok
    if key == "connection":
        return value not in ("ssh", "local")
    if key == "start_method":
        return value not in ("fork", "spawn", "forkserver")
    if key == "nanny":
        return type(value) is not bool
    if key in ("host", "user", "python", "workdir", "identity_file"):
        if isinstance(value, str) and key in ("python", "workdir") and re.search(r"\{(python|workdir)\}", value):
            return True  # a placeholder inside the value it would be replaced by (issue 23)
        if isinstance(value, str) and key == "workdir" and not value.startswith("/"):
            return True  # a workdir is absolute
        return not isinstance(value, str) or value == "" or "\x00" in value or "\n" in value
    if key == "dashboard_host":
        return not isinstance(value, str) or "\x00" in value
    if key == "name":
        return not isinstance(value, str)
    if key == "defaults":
        return not isinstance(value, dict)
    if key == "scheduler":
        return not isinstance(value, dict)
    if key == "workers":
        return not isinstance(value, list) or not value
    if key in PROCESS_MAPPINGS | WORKER_MAPPINGS | SCHEDULER_MAPPINGS:
        return not isinstance(value, (dict, str))  # a mapping (local_directory: a text), else refused
    if key == "setup":
        return not isinstance(value, list) or not all(isinstance(c, str) for c in value)
    return False  # memory_limit, tls: rules too rich to restate; the loader decides


# -- valid inventories ------------------------------------------------------------------------------

HOSTS = ["127.0.0.1", "10.0.0.1", "10.0.0.2", "192.0.2.7", "node-1", "w1.example.org", "fd00::1",
         "fd00::2", "localhost", "db_3"]


@st.composite
def valid_inventories(draw, workdir: str) -> dict:
    hosts = draw(st.lists(st.sampled_from(HOSTS), min_size=2, max_size=5, unique=True))
    defaults: dict = {"workdir": workdir}
    if draw(st.booleans()):
        defaults["connection"] = draw(st.sampled_from(["ssh", "local"]))
    if draw(st.booleans()):
        defaults["user"] = draw(st.sampled_from(["root", "dask", "ünïcode"]))
    if draw(st.booleans()):
        defaults["port"] = draw(st.integers(1, 65535))
    if draw(st.booleans()):
        defaults["connect_timeout"] = draw(st.one_of(st.integers(1, 3600), st.floats(0.1, 3600)))
    if draw(st.booleans()):
        defaults["nthreads"] = draw(st.integers(1, 64))
    port = draw(st.integers(1024, 65534))
    dashboard = draw(st.integers(1024, 65535))
    dashboard = port + 1 if dashboard == port else dashboard
    scheduler = {"host": hosts[0], "port": port, "dashboard_port": dashboard}
    workers = []
    for host in hosts[1:]:
        w: dict = {"host": host}
        if draw(st.booleans()):
            w["nworkers"] = draw(st.integers(1, 4))
        if draw(st.booleans()):
            w["memory_limit"] = draw(st.sampled_from(["auto", "4GiB", "512 MB", 0.5, 1000000, "0"]))
        if draw(st.booleans()):
            w["nanny"] = draw(st.booleans())
        if draw(st.booleans()):
            w["start_method"] = draw(st.sampled_from(["fork", "spawn", "forkserver"]))
        workers.append(w)
    doc = {"name": f"{TAG}-{draw(st.integers(0, 999))}", "defaults": defaults, "scheduler": scheduler,
           "workers": workers}
    if draw(st.booleans()):
        doc["tls"] = draw(st.sampled_from(["auto", "off", True, False]))
    return doc


def shipped(name: str) -> str:
    return (REPO / "inventory" / f"{name}.yaml").read_text()


# -- mutations --------------------------------------------------------------------------------------

CONTROL = "".join(chr(c) for c in [*range(0, 9), 11, 12, *range(14, 32), 127, *range(0x80, 0x85),
                                   *range(0x86, 0xA0)]) + "\ufffe\uffff"
ODD_STRINGS = ["", " ", "\t", "a\x00b", "x" * 100_000, "ssh", "local", "auto", "off", "fork", "4GiB",
               "127.0.0.1", "-rf", "\u202e", "ホスト", "1.5", "true", "~", "host\n", "a b", "$(reboot)",
               "[bold]x[/]", "\x1b[2J", "null", "0x1F", "1_000", "8786"]


def deep(n: int):
    value: list = []
    for _ in range(n):
        value = [value]
    return value


WEIRD = st.one_of(
    st.none(), st.booleans(),
    st.integers(-(2 ** 70), 2 ** 70),
    st.sampled_from([0, -1, 1, 22, 1024, 1025, 65535, 65536, 65537, 10 ** 30, 2 ** 63, 10 ** 4000]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.text(alphabet=CONTROL + "aé😀\u200b", min_size=1, max_size=8),
    st.sampled_from(ODD_STRINGS),
    st.lists(st.one_of(st.integers(), st.text(max_size=5)), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    st.binary(max_size=10),
    st.dates(),
    st.integers(33, 300).map(deep),
)


def short(value) -> str:
    try:
        text = repr(value)
    except ValueError:  # an int of more than 4300 digits
        return "<huge int>"
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass
class Case:
    data: bytes
    refuse: bool  # invalid by construction: the loader must refuse it
    what: str

    def __repr__(self) -> str:  # a failing example is shown by what was done, not megabytes of it
        head = self.data[:300] + (b"..." if len(self.data) > 300 else b"")
        return f"Case({self.what!r}, refuse={self.refuse}, {len(self.data)} bytes: {head!r})"


def sections(doc: dict) -> list[tuple[str, tuple]]:
    """(section kind, path) of every mapping the README defines, as far as ``doc`` has them."""
    out = [("top", ())]
    for name in ("defaults", "scheduler"):
        if isinstance(doc.get(name), dict):
            out.append((name, (name,)))
    if isinstance(doc.get("workers"), list):
        out += [("worker", ("workers", i)) for i, w in enumerate(doc["workers"]) if isinstance(w, dict)]
    return out


def at(doc, path: tuple):
    for part in path:
        doc = doc[part]
    return doc


def dump(doc, draw) -> bytes:
    style = draw(st.sampled_from([False, None, True]))
    text = yaml.safe_dump(doc, sort_keys=False, default_flow_style=style, allow_unicode=draw(st.booleans()),
                          width=draw(st.sampled_from([80, 10 ** 9])))
    return text.encode("utf-8")


KEY_LINE = re.compile(r"^(\s*)(- )?[A-Za-z_]+:(\s|$)")


@st.composite
def cases(draw, workdir: str) -> Case:
    base_kind = draw(st.sampled_from(["generated", "generated", "local", "example"]))
    if base_kind == "generated":
        doc = draw(valid_inventories(workdir))
        text = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=10 ** 9)
    else:
        text = shipped(base_kind)
        doc = yaml.safe_load(text)
    kind = draw(st.sampled_from(["set", "delete", "set", "dup-line", "set", "share", "delete", "alias-worker",
                                 "tab", "bad-char", "bad-byte", "huge-number", "top", "bomb", "recursive",
                                 "nest", "truncate", "garbage", "none"]))
    lines = text.splitlines(keepends=True)
    keyed = [i for i, line in enumerate(lines) if KEY_LINE.match(line)]

    if kind == "none":
        return Case(text.encode(), False, f"{base_kind} as is")
    if kind == "set":
        section, path = draw(st.sampled_from(sections(doc)))
        key = draw(st.one_of(st.sampled_from(sorted(KEYS[section])),
                             st.sampled_from(sorted(set().union(*KEYS.values()))),
                             st.text(min_size=1, max_size=12).filter(lambda k: k != "<<")))  # a merge key
        value = draw(WEIRD)
        at(doc, path)[key] = value
        nested = isinstance(value, list) and bool(value) and isinstance(value[0], list)  # deep(): > 32 levels
        refuse = must_refuse(section, key, value) or nested
        return Case(dump(doc, draw), refuse, f"{base_kind}: {'.'.join(map(str, path)) or 'top'}.{key!r} = "
                    f"{short(value)}")
    if kind == "delete":
        section, path = draw(st.sampled_from(sections(doc)))
        present = sorted(k for k in at(doc, path) if isinstance(k, str))
        if not present:
            return Case(dump(doc, draw), False, f"{base_kind}: nothing to delete")
        key = draw(st.sampled_from(present))
        del at(doc, path)[key]
        refuse = (section, key) in {("top", "scheduler"), ("top", "workers"), ("scheduler", "host"),
                                    ("worker", "host")}
        return Case(dump(doc, draw), refuse, f"{base_kind}: delete {'.'.join(map(str, path + (key,)))}")
    if kind == "alias-worker":  # the same worker mapping twice: an anchor, an alias, a duplicate host
        doc["workers"].append(doc["workers"][0])
        return Case(dump(doc, draw), True, f"{base_kind}: workers[0] aliased again")
    if kind == "share":  # one mapping in two places (anchor + alias); valid or not by the rules
        src = draw(st.sampled_from(sections(doc)[1:]))[1]
        dst_section, dst = draw(st.sampled_from(sections(doc)[1:]))
        if dst == () or dst == src:
            return Case(dump(doc, draw), False, f"{base_kind}: shared nothing")
        parent, last = at(doc, dst[:-1]), dst[-1]
        parent[last] = at(doc, src)
        return Case(dump(doc, draw), False, f"{base_kind}: {src} shared as {dst}")
    if kind == "top":
        value = draw(st.one_of(st.lists(st.integers(), max_size=3), st.text(max_size=10).filter(
            lambda t: not t.strip().startswith(("{", "!", "&", "*", "%", "?"))), st.none(),
            st.integers(), st.just(doc["workers"])))
        body = yaml.safe_dump(value) if value is not None else draw(st.sampled_from(["", "# nothing\n", "~\n"]))
        return Case(body.encode(), True, f"top is {short(value)}")
    if kind == "bomb":
        fan, levels = draw(st.integers(2, 10)), draw(st.integers(2, 12))
        out = [f"b0: &b0 [{', '.join(['x'] * fan)}]"]
        out += [f"b{i}: &b{i} [{', '.join([f'*b{i - 1}'] * fan)}]" for i in range(1, levels)]
        where = draw(st.sampled_from(["workers", "extra"]))
        body = text + "\n".join(out) + "\n" if where == "extra" else \
            "\n".join(out) + "\n" + re.sub(r"(?ms)^workers:.*", f"workers: *b{levels - 1}\n", text)
        return Case(body.encode(), True, f"alias bomb {fan}^{levels} as {where}")
    if kind == "recursive":
        key = draw(st.sampled_from(["workers", "defaults", "scheduler", "loop"]))
        body = re.sub(rf"(?ms)^{key}:.*?(?=^\S|\Z)", "", text) + f"{key}: &r [*r]\n"
        return Case(body.encode(), True, f"recursive alias at {key}")
    if kind == "nest":
        flow = draw(st.booleans())
        n = draw(st.integers(33, 3000 if flow else 400))  # block style grows as n squared
        value = "[" * n + "]" * n if flow else "\n" + "".join("  " * i + "-\n" for i in range(n)) + "  " * n + "- x"
        body = text + f"nested: {value}\n"
        return Case(body.encode(), True, f"nested {n} deep ({'flow' if flow else 'block'})")
    if kind == "dup-line":
        if not keyed:
            return Case(text.encode(), False, "no key line")
        i = draw(st.sampled_from(keyed))
        body = "".join(lines[:i + 1] + [lines[i].replace("- ", "  ", 1)] + lines[i + 1:])
        return Case(body.encode(), True, f"line {i + 1} duplicated: {lines[i]!r}")
    if kind == "tab":
        if not keyed:
            return Case(text.encode(), False, "no key line")
        i = draw(st.sampled_from(keyed))
        stripped = lines[i].lstrip(" ")
        body = "".join(lines[:i] + ["\t" + stripped] + lines[i + 1:])
        return Case(body.encode(), True, f"tab indents line {i + 1}")
    if kind == "bad-char":
        pos = draw(st.integers(0, len(text)))
        char = draw(st.sampled_from(CONTROL))
        return Case((text[:pos] + char + text[pos:]).encode(), True, f"{char!r} at {pos}")
    if kind == "bad-byte":
        raw = text.encode()
        pos = draw(st.integers(0, len(raw)))
        junk = draw(st.sampled_from([b"\xff", b"\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\x80", b"\xf8\x88\x80\x80\x80"]))
        return Case(raw[:pos] + junk + raw[pos:], True, f"{junk!r} at byte {pos}")
    if kind == "huge-number":  # more digits than Python converts (4300): PyYAML's int() raises
        valued = [i for i in keyed if re.match(r"^\s*(- )?[A-Za-z_]+: *[^\s#]", lines[i])]
        if not valued:
            return Case(text.encode(), False, "no value")
        i = draw(st.sampled_from(valued))
        head = lines[i].split(":", 1)[0]
        body = "".join(lines[:i] + [f"{head}: {'9' * draw(st.integers(4301, 20000))}\n"] + lines[i + 1:])
        return Case(body.encode(), True, f"line {i + 1} holds a huge number")
    if kind == "truncate":
        pos = draw(st.integers(0, len(text)))
        return Case(text[:pos].encode(), False, f"cut at {pos}")
    # garbage
    data = draw(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
    return Case(data, False, "garbage")


# -- watching processes and the home ----------------------------------------------------------------


def ours() -> set[tuple[int, str]]:
    """Processes of these tests: carrying the clusterctl marker, or running dask, with TAG in the
    marker or command line (other suites may start clusters on this machine at the same time)."""
    found = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                environ = f.read()
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ")
        except OSError:
            continue
        marker = next((item for item in environ.split(b"\0") if item.startswith(MARKER)), b"")
        dask = b"-m dask" in cmdline or b"dask scheduler" in cmdline or b"dask worker" in cmdline
        if (marker or dask) and TAG.encode() in marker + cmdline:
            found.add((int(entry.name), (marker or cmdline).decode(errors="replace")))
    return found


@pytest.fixture(scope="module")
def sandbox():
    with tempfile.TemporaryDirectory(prefix=f"{TAG}-") as tmp:
        root = Path(tmp)
        (root / "work").mkdir()
        before = ours()
        yield root
        assert ours() - before == set(), "processes started while fuzzing"


class Hang(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float, what: str):
    """A hang fails the example in seconds (and hypothesis shrinks it) instead of the whole test
    running into pytest's timeout."""
    def expired(signum, frame):
        raise Hang(f"still running after {seconds} s: {what}")

    previous = signal.signal(signal.SIGALRM, expired)
    outer, start = signal.setitimer(signal.ITIMER_REAL, seconds), time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer[0] > 0:  # pytest-timeout's own alarm, less the time spent here
            signal.setitimer(signal.ITIMER_REAL, max(outer[0] - (time.monotonic() - start), 0.001), outer[1])


def invoke(home: Path, *args: str):
    return RUNNER.invoke(COMMAND, list(args), env={"CLUSTERCTL_HOME": str(home), "COLUMNS": "200"})


def check_nothing_started(home: Path, before: set) -> None:
    if home.exists():
        left = sorted(str(p.relative_to(home)) for p in home.rglob("*"))
        assert not left, f"CLUSTERCTL_HOME has {left}: the command got past the input checks"
    new = ours() - before
    assert not new, f"processes started: {new}"


DETAIL = re.compile(r"^  (?P<file>.+?):(?P<line>\d+): (?P<field>[^:]+?): (?P<msg>.+)$")


def check_refused(result, path: Path, nlines: int, *, json_output: bool = False) -> str:
    """Exit 2, one readable message naming the file (and line and field for inventory problems)."""
    everything = result.stdout + result.stderr
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), \
        f"exception escaped the CLI: {result.exception!r}"
    assert "Traceback" not in everything and "unexpected error" not in everything, everything[-3000:]
    assert result.exit_code == 2, (result.exit_code, everything[-3000:])
    if json_output:
        obj = json.loads(result.stdout)
        assert isinstance(obj, dict) and obj["exit_code"] == 2 and str(path) in obj["error"], obj
        return obj["error"]
    assert result.stdout == "", result.stdout[:2000]
    err = result.stderr.splitlines()
    assert err and err[0].startswith("error: ") and str(path) in err[0], result.stderr[:2000]
    assert len(err) <= inventory.MAX_DETAILS + 2, f"{len(err)} lines"
    for line in err:
        assert len(line) <= 2000, f"a {len(line)}-character line: {line[:200]}..."
    m = re.match(rf"^error: {re.escape(str(path))}:(\d+): ", err[0])
    if m:  # one problem that stops reading (YAML, encoding, nesting): its line
        assert 1 <= int(m[1]) <= nlines + 1, err[0]
        assert len(err) == 1, result.stderr[:2000]
    elif not err[0].startswith((f"error: cannot read inventory {path}", f"error: {path}: larger than")):
        assert re.match(rf"^error: {re.escape(str(path))}: \d+ problems?; nothing was started$", err[0]), err[0]
        assert len(err) >= 2, result.stderr
        for line in err[1:]:
            if line.startswith("  ... and "):
                continue
            d = DETAIL.match(line)
            assert d and d["file"] == str(path), f"not FILE:LINE: FIELD: message: {line[:300]!r}"
            assert 1 <= int(d["line"]) <= nlines + 1, line[:300]
    return err[0].removeprefix("error: ")


def check_usable(inv: inventory.Inventory) -> None:
    """What the loader accepted is usable by spec.build and by down --force, contacting nothing."""
    from clusterctl import teardown as downs

    assert inventory.NAME_RE.fullmatch(inv.name), inv.name
    cluster = spec.build(inv)
    procs = cluster.processes
    assert len(procs) <= inventory.MAX_PROCESSES + 1
    assert len({p.name for p in procs}) == len(procs), "two processes with one name"
    assert len({p.dir for p in procs}) == len(procs), "two processes with one directory"
    addresses: dict[str, set] = {}
    for p in procs:
        addresses.setdefault(p.host.id, set()).add((p.host.address, p.host.ssh_port or 22))
        for word in (*p.argv, p.dir, *(v for kv in p.env for v in kv)):
            assert isinstance(word, str) and not any(ord(c) < 32 or ord(c) == 127 for c in word), word
        assert 0 < p.host.connect_timeout <= 3600
    assert all(len(a) == 1 for a in addresses.values()), f"hosts share an id: {addresses}"
    s = inv.scheduler
    assert 1 <= s.port <= 65535 and 1 <= s.dashboard_port <= 65535 and s.port != s.dashboard_port
    state = downs.state_from_inventory(inv)
    json.dumps(state.to_json(), allow_nan=False)


# -- the properties -----------------------------------------------------------------------------------


@settings(FUZZ, max_examples=1000)
@given(data=st.data())
def test_inventories_are_refused_cleanly_or_usable(sandbox, data):
    case = data.draw(cases(str(sandbox / "work" / TAG)), label="case")
    path = sandbox / f"{TAG}-inv.yaml"
    path.write_bytes(case.data)
    nlines = case.data.count(b"\n") + 1
    started = time.perf_counter()
    try:
        with time_limit(5, case.what):
            inv = inventory.load(path)
        refused = None
    except InventoryError as exc:
        inv, refused = None, exc
    seconds = time.perf_counter() - started
    assert seconds < 2, f"the loader took {seconds:.1f} s ({case.what})"
    event(f"{case.what.split(':')[0] if case.what.startswith(('generated', 'local', 'example')) else 'text'}"
          f" -> {'accepted' if inv is not None else 'refused'}")
    if inv is not None:
        assert not case.refuse, f"accepted an invalid inventory ({case.what})"
        check_usable(inv)
        return
    home = sandbox / "home"
    shutil.rmtree(home, ignore_errors=True)  # what one example leaves must not fail the next
    before = ours()
    up = invoke(home, "up", str(path))
    message = check_refused(up, path, nlines)
    assert message == refused.message, (message, refused.message)
    as_json = invoke(home, "up", str(path), "--json")
    assert check_refused(as_json, path, nlines, json_output=True) == refused.message
    down = invoke(home, "down", "--force", "--inventory", str(path))
    assert check_refused(down, path, nlines) == refused.message
    check_nothing_started(home, before)


PARAM_KEYS = ["n", "scale", "fail", "label", "sleep"]
KINDS = {"n": int, "scale": float, "fail": bool, "label": str, "sleep": float}
NUMBERISH = ["0", "1", "-1", "10", " 7 ", "1_000", "+3", "1e3", "1.5", ".5", "nan", "inf", "-inf", "1e999",
             "0x10", "٣", "9" * 5000, "true", "False", "YES", "no", "on", "off", "y", "n", "", " ", "maybe",
             "\x1b[2J", "a=b", "ü"]
NUMBERISH_IDS = list(range(len(NUMBERISH)))  # drawn by index: hypothesis' statistics print the choices


def expected_param_error(pairs: list[str]) -> bool:
    """True when ``pairs`` must be refused (exit 2): README, 'submit', restated."""
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or key not in KINDS:
            return True
        kind = KINDS[key]
        if kind is bool and value.strip().lower() not in {"true", "false", "yes", "no", "1", "0", "on", "off",
                                                          "y", "n"}:
            return True
        if kind in (int, float):
            try:
                number = kind(value)
            except ValueError:
                return True
            if kind is float and not math.isfinite(number):
                return True
    return False


ARGV_TEXT = st.text(st.characters(blacklist_characters="\x00"), max_size=12)  # argv cannot hold NUL
PAIRS = st.one_of(
    st.builds(lambda k, i: f"{k}={NUMBERISH[i]}", st.sampled_from(PARAM_KEYS), st.sampled_from(NUMBERISH_IDS)),
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(PARAM_KEYS), ARGV_TEXT),
    st.builds(lambda k, v: f"{k}={v}", ARGV_TEXT, ARGV_TEXT),
    st.sampled_from(["n", "=1", "==", " n =3", "scale", "label=", "label==x", "fail= TRUE "]),
    st.sampled_from(["n=5", "scale=0.5", "fail=no", "label=any thing", "sleep=0", "n=-3", "scale=1e-3"]),
    ARGV_TEXT,
).filter(lambda s: not s.startswith("-"))  # "-x" after -p is an option, not its value


@settings(FUZZ, max_examples=500)
@given(pairs=st.lists(PAIRS, max_size=4))
def test_submit_parameters_are_refused_or_reach_the_cluster_check(sandbox, pairs):
    home = sandbox / "submit-home"
    shutil.rmtree(home, ignore_errors=True)
    out = sandbox / f"{TAG}-run"
    before = ours()
    args = ["submit", str(TRIVIAL), "-o", str(out)]
    for pair in pairs:
        args += ["-p", pair]
    result = invoke(home, *args)
    everything = result.stdout + result.stderr
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    assert "Traceback" not in everything and "unexpected error" not in everything, everything
    err = result.stderr.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and len(err[0]) < 400, result.stderr
    event("refused" if expected_param_error(pairs) else "valid: no cluster")
    if expected_param_error(pairs):
        assert result.exit_code == 2, (pairs, result.stderr)
        assert "--param" in err[0], err[0]
    else:
        assert result.exit_code == 1, (pairs, result.stderr)
        assert "no cluster is up" in err[0], err[0]
    assert not out.exists(), "a run folder was made"
    check_nothing_started(home, before)


# -- a few through the real command ---------------------------------------------------------------------


@settings(FUZZ, max_examples=6)
@given(data=st.data())
def test_real_command_on_mutated_inventories(sandbox, data):
    case = data.draw(cases(str(sandbox / "work" / TAG)).filter(lambda c: c.refuse), label="case")
    # A file name that is not UTF-8 either: the CLI gets it as bytes, Python as surrogates.
    odd = data.draw(st.sampled_from([b"", b"\xff", b" sp\xc3\xa9"]), label="name")
    path = os.fsencode(sandbox) + b"/" + TAG.encode() + odd + b".yaml"
    Path(os.fsdecode(path)).write_bytes(case.data)
    home = sandbox / "proc-home"
    shutil.rmtree(home, ignore_errors=True)
    before = ours()
    for args in ([b"up", path], [b"down", b"--force", b"--inventory", path]):
        proc = subprocess.run([sys.executable.encode(), b"-m", b"clusterctl", *args], capture_output=True,
                              timeout=60, env={**os.environ, "CLUSTERCTL_HOME": str(home), "COLUMNS": "200"})
        err = proc.stderr.decode("utf-8", errors="replace")
        assert b"Traceback" not in proc.stdout + proc.stderr and "unexpected error" not in err, err[-3000:]
        assert proc.returncode == 2, (proc.returncode, case.what, err[-2000:])
        assert proc.stdout == b"" and err.startswith("error: "), (proc.stdout[:500], err[:500])
    check_nothing_started(home, before)
