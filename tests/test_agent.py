"""The agent started as ``up`` starts it (``python -c BOOT``, its source on stdin) with a real
interpreter, and its port check (agent._port_free) with real sockets in this process: a listener on
the port, on any address of either family, makes it busy and is named; a port left in TIME_WAIT is
free; an address that is not this host's is said to be so."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from clusterctl import agent, agent_session, preflight


def _ask(*requests: dict) -> list[dict]:
    """Start an agent as ``up`` does, ask each request in turn on the same stdin."""
    lines = b"".join(json.dumps(r).encode() + b"\n" for r in requests)
    done = subprocess.run([sys.executable, "-c", agent_session.BOOT, "clusterctl-agent", sys.executable],
                          input=agent_session.source() + lines, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_an_agent_reads_its_source_then_answers_each_request_on_one_line():
    probe, unknown, alive = _ask({"op": "probe", "ports": [], "check": []}, {"op": "no-such-op"},
                                 {"op": "alive", "check": [{"name": "me", "dir": "/nonexistent", "pid": 1}]})
    assert probe["ok"]["python"] == "%d.%d.%d" % sys.version_info[:3]
    assert probe["ok"]["executable"] == sys.executable
    # The versions the client compares with, found the same way (importlib.metadata).
    assert {"python": probe["ok"]["python"], **probe["ok"]["packages"]} == preflight.client_versions()
    assert probe["ok"]["packages"]["dask"] is not None and probe["ok"]["packages"]["distributed"] is not None
    assert unknown == {"fail": "KeyError: 'no-such-op'"}  # said, and the agent goes on
    assert alive == {"ok": {"alive": {"me": {"alive": False, "pids": []}}}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listen(family: int, address: str, port: int) -> socket.socket:
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((address, port))
    s.listen()
    return s


def test_a_free_port_is_free():
    port = _free_port()
    assert agent._port_free("127.0.0.1", port) == (True, "")


def test_a_listener_on_another_address_makes_the_port_busy_and_is_named():
    port = _free_port()
    with _listen(socket.AF_INET, "127.0.0.1", port):
        free, why = agent._port_free("127.0.0.2", port)  # another loopback address: not the listener's
    assert not free and why.startswith(f"pid {os.getpid()}: "), why


def test_an_ipv6_listener_makes_the_port_busy():
    port = _free_port()
    try:
        listener = _listen(socket.AF_INET6, "::1", port)
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    with listener:
        free, why = agent._port_free("127.0.0.1", port)
    assert not free and why.startswith(f"pid {os.getpid()}: "), why


def test_a_port_left_in_time_wait_is_free():
    port = _free_port()
    with _listen(socket.AF_INET, "127.0.0.1", port) as server:
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server side closes first: its end of the connection waits in TIME_WAIT
        time.sleep(0.05)
        client.close()
    assert agent._port_free("127.0.0.1", port) == (True, "")


def test_an_address_of_another_host_is_said_to_be_so():
    assert agent._port_free("192.0.2.1", _free_port()) == (False, "192.0.2.1 is not an address of this host")
