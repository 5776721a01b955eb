"""The host keys recorded for a host, read as OpenSSH reads them.

Two files count: clusterctl's own ``$CLUSTERCTL_HOME/known_hosts`` (keys accepted on first use) and
the user's ``~/.ssh/known_hosts``. A host whose key is in neither is trusted on first use; one with a
key in either must present one of the keys recorded for it. As in OpenSSH, an entry ``[h]:2222``
is for port 2222 only and a plain ``h`` for port 22 only (asyncssh's own lookup would let a plain
entry stand for every port).

A line that cannot be read is an error, never a line skipped: skipping it could turn a host with a
recorded key into one trusted on first use.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from clusterctl.errors import BAD_INPUT, ClusterctlError

MARKERS = ("cert-authority", "revoked")
MAX_DETAILS = 20


class HostKeysError(ClusterctlError):
    """A known_hosts file that cannot be read: nothing is contacted until it is fixed."""

    exit_code = BAD_INPUT


@dataclass(frozen=True)
class Entry:
    """One line of a known_hosts file."""

    file: Path
    line: int
    marker: str | None  # None (a host key), "cert-authority" or "revoked"
    pattern: str
    key: str  # "TYPE BASE64 [comment]"
    known: asyncssh.SSHKnownHosts  # this line alone, to match host names against

    def matches(self, name: str) -> bool:
        return any(self.known.match(name, "", None))


def user_file() -> Path:
    return Path(os.path.expanduser("~")) / ".ssh" / "known_hosts"


def host_name(address: str, port: int | None) -> str:
    """How known_hosts names a host: ``h`` on port 22, ``[h]:port`` on any other."""
    port = port or 22
    return address if port == 22 else f"[{address}]:{port}"


def recorded(files: list[Path], address: str, port: int | None) -> list[Entry]:
    """Every entry of ``files`` for this host and port, in file order."""
    name = host_name(address, port)
    return [e for f in files for e in read(f) if e.matches(name)]


def trusted(entries: list[Entry]) -> asyncssh.SSHKnownHosts:
    """The entries as one known_hosts list that asyncssh checks the host's key against (their host
    patterns already matched, so each is written for any host)."""
    return asyncssh.import_known_hosts("\n".join(
        (f"@{e.marker} " if e.marker else "") + "* " + e.key for e in entries))


_cache: dict[Path, tuple[bytes, list[Entry]]] = {}


def read(path: Path) -> list[Entry]:
    """The entries of a known_hosts file (none if it does not exist); ``HostKeysError`` naming the
    file and line of every line that is not an entry."""
    try:
        with open(path, "rb") as f:
            fcntl.flock(f, fcntl.LOCK_SH)  # clusterctl appends under LOCK_EX: read whole lines only
            data = f.read()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise HostKeysError(f"cannot read {path}: {exc.strerror or exc}; host keys cannot be checked"
                            " without it. Fix its permissions, or move it away") from None
    if path in _cache and _cache[path][0] == data:  # every host of a command reads the same file
        return _cache[path][1]
    entries: list[Entry] = []
    problems: list[str] = []
    for n, raw in enumerate(data.split(b"\n"), 1):
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            problems.append(f"{path}:{n}: not a known_hosts entry (not UTF-8 text)")
            continue
        if not text or text.startswith("#"):
            continue
        entry = _entry(path, n, text)
        if isinstance(entry, str):
            problems.append(f"{path}:{n}: not a known_hosts entry ({entry})")
        else:
            entries.append(entry)
    if problems:
        more = [] if len(problems) <= MAX_DETAILS else [f"... and {len(problems) - MAX_DETAILS} more"]
        raise HostKeysError(
            f"{problems[0]}: fix or delete that line. Host keys cannot be checked against a file with a"
            " broken line, so no host was contacted"
            + (f" ({len(problems)} broken lines in all)" if len(problems) > 1 else ""),
            details=problems[1:MAX_DETAILS] + more)
    _cache[path] = (data, entries)
    return entries


def _entry(path: Path, n: int, text: str) -> Entry | str:
    """The line's entry, or why it is not one."""
    marker = None
    if text.startswith("@"):
        head, _, text = text.partition(" ")
        marker = head[1:]
        if marker not in MARKERS:
            return f"unknown marker @{marker}; known: @cert-authority, @revoked"
    pattern, _, key = text.strip().partition(" ")
    key = key.strip()
    if not key:
        return "expected HOSTS KEYTYPE KEY"
    if not key.startswith("x509v3-"):
        try:
            asyncssh.import_public_key(key)
        except (asyncssh.KeyImportError, ValueError) as exc:
            return f"the key cannot be read: {exc}"
    try:
        known = asyncssh.import_known_hosts(("@" + marker + " " if marker else "") + f"{pattern} {key}")
    except (ValueError, asyncssh.Error) as exc:
        return str(exc)
    return Entry(path, n, marker, pattern, key, known)
