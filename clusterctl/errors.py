"""One family of errors. Each carries the exit code the CLI turns it into."""

from __future__ import annotations

OK, FAILED, BAD_INPUT, PARTIAL = 0, 1, 2, 3


class ClusterctlError(Exception):
    """A failure a person can act on: the message names the host, file or field and what to do."""

    exit_code = FAILED

    def __init__(self, message: str, *, details: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or []


class InventoryError(ClusterctlError):
    """The inventory file is unreadable or invalid; every problem is listed in ``details``."""

    exit_code = BAD_INPUT


class UsageError(ClusterctlError):
    exit_code = BAD_INPUT


class ConnectError(ClusterctlError):
    """Could not open a session to a host (unreachable, auth refused, host key changed)."""

    def __init__(self, message: str, *, unreachable: bool = False):
        super().__init__(message)
        self.unreachable = unreachable


class RemoteError(ClusterctlError):
    """A command on a host failed or timed out."""


class StateError(ClusterctlError):
    """The recorded state is missing, locked by another run, or unreadable."""

