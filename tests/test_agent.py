"""The agent's start (remote.BOOT, remote.agent_payload) with real interpreters, and its port check
(agent._port_free) with real sockets in this process: a listener on the port, on any address of
either family, makes it busy and is named; a port left in TIME_WAIT is free; an address that is not
this host's is said to be so."""

import json
import marshal
import os
import socket
import subprocess
import sys
import time
import zlib

import pytest

from clusterctl import agent, remote


def _ask(payload: bytes, request: dict) -> dict:
    """Start an agent as ``up`` does (``python -c BOOT serve``, the payload on stdin), ask one thing."""
    done = subprocess.run([sys.executable, "-c", remote.BOOT, "serve"], input=payload + json.dumps(request).encode() + b"\n",
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout.splitlines()[0])


def test_an_agent_runs_the_code_sent_where_its_python_is_the_clients_and_compiles_the_source_elsewhere():
    header, rest = remote.agent_payload().split(b"\n", 1)
    z, n, tag = header.split()
    data = zlib.decompress(rest)
    assert int(z) == len(rest)
    source, sent = data[:int(n)], data[int(n):]
    assert source == remote._agent_source() and sent, "this interpreter's import left no code to send"
    assert marshal.loads(sent).co_filename.endswith("agent.py")  # the import's cached code

    # Source and code that differ in one operation tell which of the two the agent ran.
    def variant(said: str) -> bytes:
        return source.replace(b'"release": op_release}', b'"release": op_release, "which": lambda req: "%s"}' % said.encode())

    code = marshal.dumps(compile(variant("code"), "clusterctl-agent", "exec"))

    def payload(tag: bytes, code: bytes = code) -> bytes:
        src = variant("source")
        body = zlib.compress(src + code)
        return b"%d %d %s\n" % (len(body), len(src), tag) + body

    assert _ask(payload(tag), {"op": "which"}) == {"ok": "code"}
    assert _ask(payload(b"0-cpython-00"), {"op": "which"}) == {"ok": "source"}  # another Python: compiled there
    assert _ask(payload(tag, b""), {"op": "which"}) == {"ok": "source"}  # no code sent
    probe = _ask(remote.agent_payload(), {"op": "probe", "ports": [], "check": [], "hold": []})["ok"]
    assert probe["python"] == "%d.%d.%d" % sys.version_info[:3]


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
    assert agent._no_listener(port)
    assert agent._port_free("127.0.0.1", port) == (True, "")


def test_a_listener_on_another_address_makes_the_port_busy_and_is_named():
    port = _free_port()
    with _listen(socket.AF_INET, "127.0.0.1", port):
        assert not agent._no_listener(port)
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
