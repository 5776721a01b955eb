"""The host inventory: YAML in, a frozen and validated ``Inventory`` out.

Validation happens in two passes so that every problem is reported at once, each with its line:
the raw shape (pydantic, strict, unknown keys refused), then the rules that need the whole file
(defaults merged into hosts, duplicate hosts, unreadable identity files, clashing ports).
"""

from __future__ import annotations

import os
import re
import sys
import unicodedata
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from clusterctl.errors import InventoryError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")  # \Z: "$" would let "x\n" through
MEMORY_RE = re.compile(r"^(auto|\d+(\.\d+)?\s*([kmgtp]i?b?|b)?)\Z", re.IGNORECASE)
HOST_RE = re.compile(r"^[A-Za-z0-9_.:%][A-Za-z0-9_.:%-]{0,252}\Z")
# The default workdir: one per user, so that no two users share a folder. clusterctl refuses a workdir
# that another user owns or can write (agent._unsafe), so a folder planted by someone else is refused.
DEFAULT_WORKDIR = "/tmp/clusterctl-{user}"
# What `exec` and `setup` replace in a command (clusterctl.targets.expand), with the host's values.
PLACEHOLDER_RE = re.compile(r"\{(python|workdir)\}")
# Dask's own default: a nanny that forks its worker while it runs threads of its own may copy a
# lock in a held state into the child.
DEFAULT_START_METHOD = "spawn"
DEFAULT_CONNECT_TIMEOUT = 10.0
# `jump: none`: this host is reached directly, even where the defaults or ~/.ssh/config name a jump host.
JUMP_NONE = "none"
# Limits that keep a hostile or broken file from hanging `up` (an inventory needs 4 levels and a few
# hundred values): file size, nesting, values once YAML aliases are expanded, processes in all.
MAX_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 32
MAX_NODES = 200_000
MAX_TEXT = 1024
MAX_NWORKERS = 1024
MAX_PROCESSES = 10_000
MAX_DETAILS = 100


def _text(value: str) -> str:
    """A path, user or interpreter: it ends up in a command line or a file name on a host."""
    if not value:
        raise ValueError("must not be empty")
    if len(value) > MAX_TEXT:
        raise ValueError(f"is longer than {MAX_TEXT} characters")
    bad = next((c for c in value if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp")), None)
    if bad is not None:
        raise ValueError(f"contains the control character {bad!r}; remove it")
    return value


def _no_placeholder(value: str) -> str:
    """A value that ``{python}`` or ``{workdir}`` stands for may not hold a placeholder itself."""
    found = PLACEHOLDER_RE.search(value)
    if found:
        raise ValueError(f"contains the placeholder {found.group(0)}; placeholders belong in exec and setup"
                         " commands, not in the values they stand for: remove it")
    return value


def _workdir(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("must be an absolute path (starting with /), e.g. /tmp/clusterctl: a relative"
                         " path or ~ would name a different folder for each command on the host")
    return value


def _host(value: str) -> str:
    if not HOST_RE.match(value):
        raise ValueError("not a host name or IP address (letters, digits and . - _ : % only, at most"
                         " 253 characters, not starting with '-')")
    return value


def split_jump(value: str) -> list[tuple[str | None, str, int | None]]:
    """``[user@]host[:port][,...]`` (OpenSSH's ProxyJump, first hop first) as (user, host, port) per
    hop; ``ValueError`` saying what is wrong. An IPv6 address with a port is written ``[addr]:port``."""
    hops = []
    for hop in (h.strip() for h in value.split(",")):
        which = f"{hop!r}: " if "," in value else ""  # in a chain, say which hop
        user, at, where = hop.rpartition("@")
        if at and (not user or any(c.isspace() or c in "@:/" for c in user)):
            raise ValueError(f"{which}the user before @ must be a plain user name")
        port: str | None = None
        if where.startswith("["):
            where, _, rest = where[1:].partition("]")
            if rest:
                if not rest.startswith(":"):
                    raise ValueError(f"{which}write an IPv6 address with a port as [address]:port")
                port = rest[1:]
        elif where.count(":") == 1:
            where, port = where.split(":")
        if not HOST_RE.match(where):
            raise ValueError(f"{which}not [user@]host[:port]: the host must be a host name or IP address"
                             " (letters, digits and . - _ : % only)")
        if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise ValueError(f"{which}the port after : must be a number from 1 to 65535")
        hops.append((user or None, where, int(port) if port is not None else None))
    return hops


def _jump(value: str) -> str:
    """``none`` (connect directly, whatever ~/.ssh/config says) or ``[user@]bastion[:port]``, several
    separated by commas for a chain, as in OpenSSH's ProxyJump."""
    value = value.strip()
    if value.lower() == JUMP_NONE:
        return JUMP_NONE
    if not value:
        raise ValueError("must not be empty; write user@bastion[:port], or none to connect directly")
    split_jump(value)
    return value


def _bind_host(value: str) -> str:
    return value if value == "" else _host(value)  # "" binds every interface, like 0.0.0.0


def _command(value: str) -> str:
    """A setup command: one shell command line, run with sh -c on every host."""
    if not value.strip():
        raise ValueError("must not be empty")
    if len(value) > 4 * MAX_TEXT:
        raise ValueError(f"is longer than {4 * MAX_TEXT} characters")
    bad = next((c for c in value if c != "\t" and unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp")), None)
    if bad is not None:
        raise ValueError(f"contains the control character {bad!r}; remove it")
    return value


def _package(value: str) -> str:
    """A distribution for ``clusterctl sync``: a name, maybe with extras (``dask[dataframe]``), no version:
    sync installs the version this machine has."""
    if not re.match(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?(\[[A-Za-z0-9._-]+(,[A-Za-z0-9._-]+)*\])?$", value):
        raise ValueError("must be a package name, maybe with extras, e.g. scikit-learn or dask[dataframe];"
                         " no version: sync installs the version installed here")
    return value


ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# What clusterctl sets in a process's environment itself: the inventory may not.
RESERVED_ENV = {"CLUSTERCTL_PROCESS", "DASK_CONFIG", "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION",
                "DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES", "DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD"}
SECRET_RE = re.compile(r"TOKEN|KEY|PASSWORD|PASSWD|SECRET|CREDENTIAL", re.I)


def _env(value: dict) -> dict:
    for name in value:
        if not ENV_NAME_RE.match(name):
            raise ValueError(f"{name!r} is not an environment variable name (letters, digits, _)")
        if name in RESERVED_ENV:
            use = "dask_config" if name == "DASK_CONFIG" else "the inventory key that sets it"
            raise ValueError(f"{name} is set by clusterctl itself; use {use} instead")
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}


def _abs_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("must be an absolute path (starting with /)")
    return value


def _resources(value: dict) -> dict:
    """Amounts as numbers; YAML reads ``64e9`` (no dot) as text, so numeric text is read here."""
    out = {}
    for name, amount in value.items():
        try:
            out[name] = float(amount) if isinstance(amount, str) else amount
        except ValueError:
            raise ValueError(f"{name}: {amount!r} is not a number (e.g. GPU: 1, MEMORY: 64e9)") from None
        if not ENV_NAME_RE.match(name) or out[name] < 0:
            raise ValueError(f"{name!r}: a resource is a name (letters, digits, _) and an amount of 0 or more")
    return out


Scalar = Union[str, int, float, bool]
EnvMap = Annotated[dict[str, Scalar], AfterValidator(_env)]
OptionValue = Union[str, int, float, bool, list[Union[str, int, float]]]

Port = Annotated[int, Field(ge=1, le=65535)]
Seconds = Annotated[float, Field(gt=0, le=3600)]
Text = Annotated[str, AfterValidator(_text)]
HostName = Annotated[str, AfterValidator(_host)]
Python = Annotated[str, AfterValidator(_text), AfterValidator(_no_placeholder)]
Workdir = Annotated[str, AfterValidator(_text), AfterValidator(_workdir), AfterValidator(_no_placeholder)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _HostSettings(_Strict):
    user: Text | None = None
    ssh_port: Port | None = None
    identity_file: Text | None = None
    python: Python | None = None
    workdir: Workdir | None = None
    connection: Literal["ssh", "local"] | None = None
    connect_timeout: Union[Seconds, Annotated[int, Field(gt=0, le=3600)]] | None = None
    # The bastion the host is reached through: [user@]host[:port], as OpenSSH's ProxyJump.
    jump: Annotated[str, AfterValidator(_text), AfterValidator(_jump)] | None = None
    env: EnvMap | None = None  # for the Dask processes (never secrets: they show in /proc)
    dask_config: dict[str, Any] | None = None  # a YAML file given to the process through DASK_CONFIG


class _WorkerSettings(_Strict):
    nworkers: Annotated[int, Field(ge=1, le=MAX_NWORKERS)] | None = None
    nthreads: Annotated[int, Field(ge=1, le=65536)] | None = None
    memory_limit: str | Annotated[int, Field(ge=0)] | Annotated[float, Field(gt=0, le=1)] | None = None
    nanny: bool | None = None
    start_method: Literal["fork", "spawn", "forkserver"] | None = None
    resources: Annotated[dict[str, Union[int, float, str]], AfterValidator(_resources)] | None = None
    local_directory: Annotated[str, AfterValidator(_text), AfterValidator(_abs_path)] | None = None
    worker_options: dict[str, OptionValue] | None = None  # other `dask worker` flags


class _Defaults(_HostSettings, _WorkerSettings):
    port: Port | None = None  # the SSH port, as in ~/.ssh/config


class _SchedulerEntry(_HostSettings):
    host: HostName
    port: Port = 8786
    dashboard_port: Port = 8787
    dashboard_host: Annotated[str, AfterValidator(_bind_host)] = "127.0.0.1"  # loopback: reach it with `clusterctl dashboard`
    scheduler_options: dict[str, OptionValue] | None = None  # other `dask scheduler` flags


class _TlsFiles(_Strict):
    ca_file: Text
    cert: Text
    key: Text


class _WorkerEntry(_HostSettings, _WorkerSettings):
    host: HostName
    port: Port | None = None  # the SSH port of this worker host


class _InventoryFile(_Strict):
    name: str | None = None
    # YAML reads a bare `off` as false, so a bool is accepted too.
    tls: Literal["auto", "off"] | bool | _TlsFiles = "auto"
    # Shell commands for `clusterctl setup` / `up --setup`, run in order on every host.
    setup: list[Annotated[str, AfterValidator(_command)]] = Field(default_factory=list, max_length=100)
    # What `clusterctl sync` installs on every host besides dask, distributed and bokeh.
    packages: list[Annotated[str, AfterValidator(_package)]] = Field(default_factory=list, max_length=200)
    # Hosts in flight at once in each step (connect, check, start, stop, exec); --parallel beats it.
    parallel: int | None = Field(default=None, ge=1, le=4096)
    defaults: _Defaults = Field(default_factory=_Defaults)
    scheduler: _SchedulerEntry
    workers: list[_WorkerEntry] = Field(min_length=1)


@dataclass(frozen=True)
class Host:
    """One machine as clusterctl reaches it."""

    address: str
    connection: str = "ssh"
    ssh_port: int | None = None
    user: str | None = None
    identity_file: str | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    # The jump host(s) as ProxyJump writes them, "none" for a direct connection whatever ~/.ssh/config
    # says, None to let ~/.ssh/config decide.
    jump: str | None = None

    @property
    def id(self) -> str:
        """Names this host in directories, worker names and reports."""
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", self.address)
        return base if self.ssh_port in (None, 22) else f"{base}_{self.ssh_port}"

    @property
    def key(self) -> tuple:
        """Hosts with the same key share one connection."""
        return (self.connection, self.user, self.address, self.ssh_port, self.identity_file, self.jump)

    def to_dict(self) -> dict[str, Any]:
        # Without a jump host, the fields clusterctl has always recorded, and no more.
        return {k: v for k, v in self.__dict__.items() if not (k == "jump" and v is None)}


@dataclass(frozen=True)
class SchedulerSpec:
    host: Host
    python: str
    workdir: str
    port: int
    dashboard_port: int
    dashboard_host: str = "127.0.0.1"
    env: tuple[tuple[str, str], ...] = ()
    dask_config: str = ""  # YAML text, "" for none
    options: tuple[str, ...] = ()  # extra `dask scheduler` arguments


@dataclass(frozen=True)
class TlsConfig:
    """``auto``: clusterctl's own CA; ``files``: the operator's PKI; ``off``: plain TCP (warned)."""

    mode: str = "auto"
    ca_file: str | None = None
    cert: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class WorkerGroup:
    host: Host
    python: str
    workdir: str
    nworkers: int
    nthreads: int | None
    memory_limit: str
    nanny: bool
    start_method: str = DEFAULT_START_METHOD
    env: tuple[tuple[str, str], ...] = ()
    dask_config: str = ""  # YAML text, "" for none
    resources: tuple[tuple[str, float], ...] = ()
    local_directory: str | None = None
    options: tuple[str, ...] = ()  # extra `dask worker` arguments


@dataclass(frozen=True)
class Inventory:
    name: str
    path: str
    scheduler: SchedulerSpec
    workers: tuple[WorkerGroup, ...]
    tls: TlsConfig = TlsConfig()
    setup: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()
    parallel: int | None = None  # hosts in flight at once (transport.Pool); None: the default

    def hosts(self) -> list[Host]:
        """Every distinct host, scheduler first."""
        seen: dict[tuple, Host] = {}
        for host in [self.scheduler.host, *(w.host for w in self.workers)]:
            seen.setdefault(host.key, host)
        return list(seen.values())


# -- YAML with line numbers ----------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader whose value errors (a timestamp like 2001-13-45, an integer of 5000 digits) are
    YAML errors with the line, not exceptions from deep inside PyYAML."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except (ValueError, OverflowError, TypeError) as exc:
            why = ("a number with more than 4300 digits" if "integer string conversion" in str(exc)
                   else f"cannot read this value: {exc}")
            raise yaml.constructor.ConstructorError(None, None, why, node.start_mark) from None


def _yaml(text: str, file: Path) -> tuple[Any, dict[tuple, int], list[tuple]]:
    """The document's data, the line of every location in it, and its duplicated keys. Refuses
    documents nested deeper than ``MAX_DEPTH`` (before PyYAML's recursive composer sees them),
    aliases that refer to themselves, and aliases that expand to more than ``MAX_NODES`` values."""
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):  # iterative: safe at any depth
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise InventoryError(f"{file}:{event.start_mark.line + 1}: nested more than {MAX_DEPTH}"
                                     " levels deep; an inventory needs 4 (see README, 'Inventory')")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}, []
        _check_expansion(node, file)
        lines: dict[tuple, int] = {}
        problems: list[tuple] = []
        _line_map(node, (), lines, problems, loader)
        return loader.construct_document(node), lines, problems
    finally:
        loader.dispose()


def _check_expansion(root: yaml.Node, file: Path) -> None:
    """What the document becomes once its aliases are expanded: no cycle, at most ``MAX_DEPTH``
    levels, at most ``MAX_NODES`` values. Each node is measured once, so an alias bomb costs
    no more than its text."""
    measured: dict[int, tuple[int, int]] = {}  # id(node) -> (values, height)
    on_path: set[int] = set()

    def measure(node: yaml.Node, depth: int) -> tuple[int, int]:
        line = node.start_mark.line + 1
        if id(node) in on_path:
            raise InventoryError(f"{file}:{line}: an alias refers to a collection that contains it"
                                 " (a recursive structure); an inventory cannot be recursive")
        if id(node) not in measured:
            if depth > MAX_DEPTH:
                raise InventoryError(f"{file}:{line}: nested more than {MAX_DEPTH} levels deep once its"
                                     " aliases are expanded; an inventory needs 4")
            children: list[yaml.Node] = []
            if isinstance(node, yaml.MappingNode):
                children = [part for pair in node.value for part in pair]
            elif isinstance(node, yaml.SequenceNode):
                children = list(node.value)
            on_path.add(id(node))
            sizes = [measure(child, depth + 1) for child in children]
            on_path.discard(id(node))
            measured[id(node)] = (1 + sum(n for n, _ in sizes), 1 + max((h for _, h in sizes), default=0))
        values, height = measured[id(node)]
        if depth + height > MAX_DEPTH + 1:
            raise InventoryError(f"{file}:{line}: nested more than {MAX_DEPTH} levels deep once its"
                                 " aliases are expanded; an inventory needs 4")
        if values > MAX_NODES:
            raise InventoryError(f"{file}:{line}: more than {MAX_NODES} values once its aliases are"
                                 " expanded; write the inventory out without nested aliases")
        return values, height

    measure(root, 1)


def _key_of(node: yaml.Node, loader: yaml.SafeLoader) -> Any:
    """A mapping key as the loaded data has it (``1`` and ``yes`` are not strings in YAML)."""
    if not isinstance(node, yaml.ScalarNode) or node.tag == "tag:yaml.org,2002:merge":
        return node.value if isinstance(node, yaml.ScalarNode) else None
    try:
        key = loader.construct_object(node)
    except yaml.YAMLError:
        return node.value  # construct_document reports it
    return key if isinstance(key, (str, int, float, bool, type(None))) else node.value


def _line_map(node: yaml.Node, loc: tuple, lines: dict[tuple, int], problems: list[tuple],
              loader: yaml.SafeLoader) -> None:
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue  # a list or mapping as a key: construct_document refuses it
            key = _key_of(key_node, loader)
            if key in seen and key_node.tag != "tag:yaml.org,2002:merge":
                problems.append((key_node.start_mark.line + 1, _field_name(loc + (key,)),
                                 "this key appears twice; keep one"))
            seen.add(key)
            lines[loc + (key,)] = key_node.start_mark.line + 1
            _line_map(value_node, loc + (key,), lines, problems, loader)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, loc + (i,), lines, problems, loader)


def _short(value: Any, limit: int = 60) -> str:
    """repr() of a value from the file, cut to a readable length (it may be a megabyte long)."""
    try:
        text = repr(value)
    except ValueError:  # an int too long to print
        return f"an integer of {len(format(value, 'x'))} hex digits"
    return _cut(text, limit)


def _field_name(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{_short(part, 40)}]"  # a list index (an int of 5000 digits is cut short too)
            continue
        plain = isinstance(part, str) and 0 < len(part) <= 40 and part.isprintable() \
            and part == part.strip() and not any(c in part for c in ":.[]'\"\\")
        if not plain:
            # Quoted, so that the key reads as one (a key "a.b" is not a.b; a key YAML did not
            # read as a string, None or 1.5, is shown as the text 'None', '1.5'), and with no
            # colon: "FILE:LINE: FIELD: message" stays one colon-separated line (':' reads '\x3a').
            text = part if isinstance(part, str) else _short(part, 40)
            part = _cut(_short(text, 40).replace(":", "\\x3a"), 60)
        out += f".{part}" if out else part
    return out or "(top level)"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _line_of(lines: dict[tuple, int], loc: tuple) -> int:
    while loc and loc not in lines:
        loc = loc[:-1]
    return lines.get(loc, 1)


def _pydantic_message(err: dict) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        return "unknown key; check the spelling (see README, 'Inventory')"
    if kind == "missing":
        return "required but missing"
    if kind == "value_error":
        msg = msg.removeprefix("Value error, ")
    if "input" in err and kind not in ("literal_error",):
        value = err["input"]
        if not isinstance(value, (dict, list)):
            return f"{msg} (got {_short(value)})"
    return msg


def _keep_most_specific(errors: list[Any]) -> list[dict]:
    """A union field fails once per branch; keep one message per location."""
    by_loc: dict[tuple, dict] = {}
    for err in errors:
        loc = tuple(p for p in err["loc"] if not isinstance(p, str) or not _is_branch_tag(p))
        by_loc.setdefault(loc, {**err, "loc": loc})
    return list(by_loc.values())


def _is_branch_tag(part: str) -> bool:
    # pydantic names union branches in the location, e.g. "str", "int", "constrained-int"
    return part in {"str", "int", "float", "bool", "none"} or part.startswith(("constrained-", "function-"))


# -- loading ----------------------------------------------------------------------------------


def load(path: str | os.PathLike) -> Inventory:
    """Read and validate an inventory file; raise ``InventoryError`` listing every problem."""
    file = Path(path)
    try:
        with open(file, "rb") as f:  # not a stat size: <(generate) is a pipe
            raw = f.read(MAX_BYTES + 1)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise InventoryError(f"cannot read inventory {file}: {getattr(exc, 'strerror', None) or exc}") from None
    if len(raw) > MAX_BYTES:
        raise InventoryError(f"{file}: larger than {MAX_BYTES // 1024 // 1024} MiB; that is not an inventory")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise InventoryError(f"{file}:{line}: not UTF-8 text (byte {raw[exc.start]:#04x}); save the inventory"
                             " as UTF-8") from None
    return parse(text, file)


def parse(text: str, file: Path) -> Inventory:
    try:
        data, lines, problems = _yaml(text, file)
    except yaml.YAMLError as exc:
        raise InventoryError(_yaml_problem(exc, text, file)) from None
    if not isinstance(data, dict):
        raise InventoryError(f"{file}:1: the inventory must be a mapping with 'scheduler' and 'workers'"
                             " (see README, 'Inventory')")

    def validate(model: type[BaseModel], value: Any, loc: tuple) -> Any:
        return _validate(model, value, loc, lines, problems)

    top = validate(_InventoryFile, {k: v for k, v in data.items() if k not in ("defaults", "scheduler", "workers")}
                   | {"scheduler": {"host": "x"}, "workers": [{"host": "x"}]}, ())
    # `defaults:` with nothing under it is None: no defaults. Anything else must be a mapping
    # (`or {}` here let `defaults: []`, `0` or `''` through unreported).
    raw_defaults = data.get("defaults")
    defaults = validate(_Defaults, {} if raw_defaults is None else raw_defaults, ("defaults",)) or _Defaults()
    scheduler = None
    if "scheduler" not in data:
        problems.append((1, "scheduler", "required but missing: add a 'scheduler:' section with its host"))
    else:
        scheduler = validate(_SchedulerEntry, data["scheduler"], ("scheduler",))
    raw_workers = data.get("workers")
    workers: list[tuple[int, _WorkerEntry]] = []
    if not isinstance(raw_workers, list) or not raw_workers:
        problems.append((_line_of(lines, ("workers",)), "workers",
                         "required: a list with at least one '- host: ADDRESS' entry"))
    else:
        for i, item in enumerate(raw_workers):
            entry = validate(_WorkerEntry, item, ("workers", i))
            if entry is not None:
                workers.append((i, entry))
    name = top.name if top is not None and top.name is not None else file.stem
    inventory = _resolve(name, defaults, scheduler, workers, file, lines, problems)
    if inventory is not None and top is not None:
        inventory = replace(inventory, tls=_tls(top.tls, lines, problems), setup=tuple(top.setup),
                            packages=tuple(top.packages), parallel=top.parallel)
    if problems:
        problems = sorted(set(problems), key=lambda p: (p[0], p[1]))
        details = [f"{file}:{line}: {field}: {msg}" for line, field, msg in problems]
        n = len(details)
        if n > MAX_DETAILS:
            details = details[:MAX_DETAILS] + [f"... and {n - MAX_DETAILS} more problems"]
        raise InventoryError(f"{file}: {n} problem{'s' if n > 1 else ''}; nothing was started", details=details)
    assert inventory is not None
    return inventory


def _validate(model: type[BaseModel], value: Any, loc: tuple, lines: dict, problems: list) -> Any:
    """Validate one section; on errors record them and retry without the offending keys, so that
    the checks which need the whole file still run and report their problems too."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        errors = _keep_most_specific(list(exc.errors()))
        for err in errors:
            full = loc + tuple(err["loc"])
            where = full
            if err["type"] == "invalid_key":  # a key YAML read as None, 1, true: pydantic says 'None'
                where, full = full[:-1] + (err.get("input"),), full[:-1] + (_short(err.get("input")),)
            problems.append((_line_of(lines, where), _field_name(full), _pydantic_message(err)))
        if not isinstance(value, dict):
            return None
        bad = {err["loc"][0] for err in errors if err["loc"]}
        try:
            return model.model_validate({k: v for k, v in value.items() if k not in bad})
        except ValidationError:
            return None


def _yaml_problem(exc: yaml.YAMLError, text: str, file: Path) -> str:
    """``FILE:LINE: not valid YAML: what`` for any error PyYAML raises."""
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow (NUL, ESC, ...)
        line = text.count("\n", 0, exc.position) + 1
        char = exc.character if isinstance(exc.character, str) else chr(exc.character)
        return f"{file}:{line}: not valid YAML: the character {char!r} is not allowed in YAML; remove it"
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{file}:{mark.line + 1}" if mark else str(file)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{where}: not valid YAML: {problem}"


def _resolve(name: str, raw_defaults: _Defaults, s: _SchedulerEntry | None,
             entries: list[tuple[int, _WorkerEntry]], file: Path, lines: dict, problems: list) -> Inventory | None:
    """Merge defaults into hosts and check what needs the whole file. Every check runs even when
    a section is invalid, so that all problems are reported at once; ``None`` if the scheduler is."""
    if not NAME_RE.match(name):
        origin = "" if ("name",) in lines else " (taken from the file name; set 'name:' in the file)"
        problems.append((_line_of(lines, ("name",)), "name", f"{_short(name)} is not a usable cluster name"
                         f" (letters, digits, '_', '.', '-'; at most 63){origin}"))
    merged = _Merged(raw_defaults, lines, problems)
    groups = [merged.worker_group(i, w) for i, w in entries]
    total = sum(g.nworkers for g in groups)
    if total > MAX_PROCESSES:
        problems.append((_line_of(lines, ("workers",)), "workers",
                         f"{total} worker processes in all; at most {MAX_PROCESSES}"))
    if s is None:
        return None
    return Inventory(name=name, path=str(file.resolve()), scheduler=merged.scheduler(s), workers=tuple(groups))


class _Merged:
    """Host entries with the defaults merged in, checked against each other as they come."""

    def __init__(self, raw_defaults: _Defaults, lines: dict, problems: list):
        self.raw_defaults, self.lines, self.problems = raw_defaults, lines, problems
        self.defaults = raw_defaults.model_dump(exclude_none=True)
        if "port" in self.defaults and "ssh_port" in self.defaults and self.defaults["port"] != self.defaults["ssh_port"]:
            self.problem(("defaults", "ssh_port"),
                         f"differs from defaults.port ({self.defaults['port']}); both name the SSH port, keep one")
        if "port" in self.defaults:
            self.defaults.setdefault("ssh_port", self.defaults.pop("port"))
        self.ids: dict[str, tuple[tuple, str]] = {}  # Host.id -> ((address, port), where)
        self.seen: dict[tuple, int] = {}  # (address, port) -> index of the worker entry

    def problem(self, loc: tuple, message: str) -> None:
        self.problems.append((_line_of(self.lines, loc), _field_name(loc), message))

    def setting(self, entry: BaseModel, loc: tuple, field: str, fallback: Any = None) -> tuple[Any, tuple]:
        """(value, where it came from): the entry's own, else the default, else ``fallback``."""
        value = getattr(entry, field, None)
        if value is not None:
            return value, loc + (field,)
        if field in self.defaults:
            return self.defaults[field], ("defaults", field if field in self.raw_defaults.model_fields_set
                                          else "port")
        return fallback, loc

    def host(self, entry: _SchedulerEntry | _WorkerEntry, loc: tuple, ssh_port: int | None) -> Host:
        connection, _ = self.setting(entry, loc, "connection", "ssh")
        identity, identity_loc = self.setting(entry, loc, "identity_file")
        if identity is not None:
            identity = os.path.expanduser(identity)
            if connection == "ssh" and not (os.path.isfile(identity) and os.access(identity, os.R_OK)):
                self.problem(identity_loc, f"identity file {identity} is missing or unreadable")
        timeout, _ = self.setting(entry, loc, "connect_timeout", DEFAULT_CONNECT_TIMEOUT)
        user, _ = self.setting(entry, loc, "user")
        jump, jump_loc = self.setting(entry, loc, "jump")
        if connection == "local":
            if getattr(entry, "jump", None) is not None:
                self.problem(jump_loc, "a local host is not reached over SSH: remove jump, or set connection: ssh")
            jump = None  # a jump host in the defaults is for the SSH hosts
        host = Host(address=entry.host, connection=connection, ssh_port=ssh_port, user=user,
                    identity_file=identity, connect_timeout=float(timeout), jump=jump)
        # Directories, process names and the state are keyed by Host.id: two hosts may not share one.
        pair = (host.address, ssh_port or 22)
        first = self.ids.setdefault(host.id, (pair, _field_name(loc + ("host",))))
        if first[0] != pair:
            self.problem(loc + ("host",), f"host {pair[0]} port {pair[1]} gets the same id {host.id!r} as"
                         f" {first[1]} ({first[0][0]} port {first[0][1]}); write one of them differently")
        return host

    def python(self, entry: BaseModel, loc: tuple, host: Host) -> str:
        python, _ = self.setting(entry, loc, "python")
        return python or (sys.executable if host.connection == "local" else "python3")

    def worker_group(self, i: int, w: _WorkerEntry) -> WorkerGroup:
        loc = ("workers", i)
        if w.port is not None and w.ssh_port is not None and w.port != w.ssh_port:
            self.problem(loc + ("ssh_port",), f"differs from port ({w.port}); both name the SSH port, keep one")
        ssh_port = w.port if w.port is not None else self.setting(w, loc, "ssh_port")[0]
        host = self.host(w, loc, ssh_port)
        pair = (host.address, ssh_port or 22)
        if pair in self.seen:
            self.problem(loc + ("host",), f"host {pair[0]} port {pair[1]} is already listed as"
                         f" workers[{self.seen[pair]}]; use 'nworkers: N' for several workers on one host")
        self.seen.setdefault(pair, i)
        memory, memory_loc = self.setting(w, loc, "memory_limit", "auto")
        if isinstance(memory, str) and not MEMORY_RE.match(memory.strip()):
            self.problem(memory_loc, f"{memory!r} is not a memory size; use auto, bytes, '4GiB' or a fraction"
                         " like 0.5")
        resources, _ = self.setting(w, loc, "resources", {})
        options, options_loc = self.setting(w, loc, "worker_options", {})
        return WorkerGroup(
            host=host, python=self.python(w, loc, host),
            workdir=self.setting(w, loc, "workdir", default_workdir(host))[0],
            nworkers=self.setting(w, loc, "nworkers", 1)[0], nthreads=self.setting(w, loc, "nthreads")[0],
            memory_limit=str(memory), nanny=self.setting(w, loc, "nanny", True)[0],
            start_method=self.setting(w, loc, "start_method", DEFAULT_START_METHOD)[0],
            env=self.env(w, loc), dask_config=self.dask_config(w, loc),
            resources=tuple(sorted((str(k), float(v)) for k, v in resources.items())),
            local_directory=self.setting(w, loc, "local_directory")[0],
            options=self.options("worker", options, options_loc))

    def env(self, entry: BaseModel, loc: tuple) -> tuple[tuple[str, str], ...]:
        """The defaults' env with the entry's over it."""
        merged = {**self.defaults.get("env", {}), **(getattr(entry, "env", None) or {})}
        return tuple(sorted(merged.items()))

    def dask_config(self, entry: BaseModel, loc: tuple) -> str:
        """The defaults' dask_config with the entry's merged over it (nested keys too), as YAML."""
        merged = _deep_merge(_nest(self.defaults.get("dask_config", {})), _nest(getattr(entry, "dask_config", None) or {}))
        return yaml.safe_dump(merged, sort_keys=True) if merged else ""

    def options(self, command: str, options: dict, loc: tuple) -> tuple[str, ...]:
        """``--name value`` arguments for ``dask worker`` / ``dask scheduler``; each name checked
        against the installed distributed's own options, and none that clusterctl sets itself."""
        if not options:
            return ()
        known = dask_options(command)
        out: list[str] = []
        for name, value in options.items():
            flag = str(name).lstrip("-").replace("_", "-")
            where = loc + (name,)
            if flag in RESERVED_OPTIONS[command]:
                self.problem(where, f"--{flag} is set by clusterctl itself: {RESERVED_OPTIONS[command][flag]}")
                continue
            if flag not in known:
                import difflib

                close = difflib.get_close_matches(flag, sorted(known), n=3)
                hint = f"; did you mean {' or '.join(close)}?" if close else f"; see 'python -m dask {command} --help'"
                self.problem(where, f"not an option of dask {command}{hint}")
                continue
            is_flag, negation = known[flag]
            if is_flag:
                if not isinstance(value, bool):
                    self.problem(where, f"--{flag} is a flag: true or false (got {_short(value)})")
                elif value:
                    out.append(f"--{flag}")
                elif negation:
                    out.append(negation)
                continue
            for item in value if isinstance(value, list) else [value]:  # one word: a value may start with -
                out.append(f"--{flag}=" + (str(item).lower() if isinstance(item, bool) else str(item)))
        return tuple(out)

    def scheduler(self, s: _SchedulerEntry) -> SchedulerSpec:
        loc = ("scheduler",)
        host = self.host(s, loc, self.setting(s, loc, "ssh_port")[0])
        if s.port == s.dashboard_port:
            self.problem(("scheduler", "dashboard_port"),
                         f"same as scheduler.port ({s.port}); give the dashboard its own port")
        return SchedulerSpec(host=host, python=self.python(s, loc, host),
                             workdir=self.setting(s, loc, "workdir", default_workdir(host))[0],
                             port=s.port, dashboard_port=s.dashboard_port, dashboard_host=s.dashboard_host,
                             env=self.env(s, loc), dask_config=self.dask_config(s, loc),
                             options=self.options("scheduler", s.scheduler_options or {},
                                                  loc + ("scheduler_options",)))


RESERVED_OPTIONS = {
    "worker": {**{f: "set by the inventory's host, workdir and TLS" for f in (
        "host", "scheduler-file", "name", "pid-file", "protocol", "tls-ca-file", "tls-cert", "tls-key",
        "dashboard-address", "dashboard", "no-dashboard", "listen-address", "contact-address")},
        "nanny": "use nanny:", "no-nanny": "use nanny:", "memory-limit": "use memory_limit:",
        "nthreads": "use nthreads:", "nworkers": "use nworkers: (one Dask name per process)",
        "resources": "use resources:", "local-directory": "use local_directory:"},
    # (both) --jupyter would serve a Jupyter server to whoever reaches the dashboard: code execution.
    "scheduler": {f: "use the scheduler's host, port, dashboard_port, dashboard_host and tls keys" for f in (
        "host", "port", "dashboard-address", "dashboard", "no-dashboard", "pid-file", "protocol",
        "tls-ca-file", "tls-cert", "tls-key", "scheduler-file", "interface")},
}
for _command in RESERVED_OPTIONS.values():
    _command["jupyter"] = ("not offered: it serves Jupyter, which runs code, to whoever reaches the dashboard;"
                           " run Jupyter on your machine and connect with clusterctl.Cluster")


def dask_options(command: str) -> dict[str, tuple[bool, str]]:
    """``dask worker`` / ``dask scheduler`` options of the installed distributed: name -> (is a flag,
    its negation like '--no-nanny' or ''). Imported only when an inventory sets options."""
    if command == "worker":
        from distributed.cli.dask_worker import main
    else:
        from distributed.cli.dask_scheduler import main
    out: dict[str, tuple[bool, str]] = {}
    for param in main.params:
        longs = [o for o in param.opts if o.startswith("--")]
        negations = [o for o in getattr(param, "secondary_opts", []) if o.startswith("--")]
        for opt in longs:
            out[opt[2:]] = (bool(getattr(param, "is_flag", False)), negations[0] if negations else "")
        for opt in negations:
            out[opt[2:]] = (True, "")
    return out


def _nest(config: dict) -> dict:
    """Dotted keys as Dask writes them (``distributed.worker.memory.spill: 0.9``) made nested, as
    a Dask YAML file must have them."""
    out: dict = {}
    for key, value in config.items():
        value = _nest(value) if isinstance(value, dict) else value
        parts = str(key).split(".")
        for part in reversed(parts[1:]):
            value = {part: value}
        out = _deep_merge(out, {parts[0]: value})
    return out


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def default_workdir(host: Host) -> str:
    """``/tmp/clusterctl-<user>``: the user that runs the processes there (the SSH user, or this
    machine's user for a local host and when the inventory names none, as ssh does)."""
    import getpass

    return DEFAULT_WORKDIR.format(user=host.user if host.user and host.connection != "local" else getpass.getuser())


def _tls(raw: Any, lines: dict, problems: list) -> TlsConfig:
    if raw is True or raw == "auto":
        return TlsConfig("auto")
    if raw is False or raw == "off":
        return TlsConfig("off")
    for field in ("ca_file", "cert", "key"):
        path = os.path.expanduser(getattr(raw, field))
        if not (os.path.isfile(path) and os.access(path, os.R_OK)):
            problems.append((_line_of(lines, ("tls", field)), f"tls.{field}", f"{path} is missing or unreadable"))
    return TlsConfig("files", *(os.path.abspath(os.path.expanduser(getattr(raw, f)))
                                for f in ("ca_file", "cert", "key")))
