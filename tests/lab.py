"""A lab of real test hosts for integration tests (stdlib only).

Every host is a Linux network namespace attached by a veth pair to a bridge in
the root namespace, with its own IPv4 address and its own ``sshd`` running as
pid 1 of its own PID namespace (``unshare --pid --fork --mount-proc``).  Hosts
share this machine's filesystem, so e.g. the test venv's python interpreter can
be run on every host by its absolute path.

Inside one host, ``ps`` shows only that host's processes.  Killing the host's
sshd (pid 1 in its PID namespace) makes the kernel kill every process on the
host, which is how :meth:`Lab.close` cleans up.

A test can add hosts that this machine cannot reach (``Lab.hidden``): a second bridge, inside one lab
host's namespace, that only that host (the bastion) has a leg on. The root namespace gets an
``unreachable`` route for their subnet (its metric is the lab's pid, for ``sweep_stale``), so that a
connection from here fails at once rather than leaving by the default route; they are reached only
through the bastion, e.g. over ``ssh -J``.

Names of everything the lab creates carry the creating process's pid (plus a
per-process instance letter), so concurrent test runs never collide, and
:meth:`Lab.close` removes only what this lab recorded as created by itself.

Needs root, iproute2 (``ip``), util-linux ``unshare``, OpenSSH server and client.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import ipaddress
import itertools
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import weakref
from dataclasses import dataclass

__all__ = ["Host", "Lab", "lab_prerequisites", "sweep_stale"]

SSHD = "/usr/sbin/sshd"
LAB_NET = ipaddress.ip_network("10.213.0.0/16")
# Subnets of hidden hosts: never a lab's own subnet, so the root namespace never has a route to one.
HIDDEN_NET = ipaddress.ip_network("10.214.0.0/16")
HIDDEN_BRIDGE = "chidden0"  # inside the bastion's namespace: no clash with another lab's names
_LOCK_FILE = "/run/lock/clusterctl-lab.lock"
_IFNAMSIZ = 15

_instances = itertools.count()
_instances_lock = threading.Lock()
_live_labs: "weakref.WeakSet[Lab]" = weakref.WeakSet()


def _on_sigterm(signum, frame) -> None:
    """SIGTERM (e.g. a CI timeout) skips atexit: close the live labs, then die of SIGTERM."""
    for lab in list(_live_labs):
        with contextlib.suppress(Exception):
            lab.close()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _install_sigterm_cleanup() -> None:
    # Only where nobody else handles SIGTERM, and only from the main thread.
    if threading.current_thread() is threading.main_thread():
        with contextlib.suppress(ValueError, OSError):
            if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
                signal.signal(signal.SIGTERM, _on_sigterm)


def _run(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        list(args), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"command failed ({proc.returncode}): {' '.join(args)}: "
            f"{(proc.stderr or proc.stdout).strip()}"
        )
    return proc


def lab_prerequisites() -> str | None:
    """None when the lab can run here, else a short human reason."""
    if os.geteuid() != 0:
        return "the lab needs root (network and PID namespaces)"
    for tool in ("ip", "unshare", "ssh-keygen", "ssh"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    if not os.access(SSHD, os.X_OK):
        return f"{SSHD} is not installed (openssh-server)"
    probe = f"cctlprobe{os.getpid()}"
    try:
        made = _run("ip", "netns", "add", probe, check=False, timeout=10)
        if made.returncode != 0:
            return f"`ip netns add` is not permitted here: {made.stderr.strip()}"
        _run("ip", "netns", "del", probe, check=False, timeout=10)
        bridge = f"cbprobe{os.getpid()}"[:_IFNAMSIZ]
        made = _run("ip", "link", "add", bridge, "type", "bridge", check=False, timeout=10)
        if made.returncode != 0:
            return f"cannot create a bridge: {made.stderr.strip()}"
        _run("ip", "link", "del", bridge, check=False, timeout=10)
        made = _run("unshare", "--pid", "--fork", "--mount-proc", "true", check=False, timeout=10)
        if made.returncode != 0:
            return f"`unshare --pid --fork --mount-proc` is not permitted here: {made.stderr.strip()}"
    except (OSError, subprocess.SubprocessError) as exc:
        return f"namespace probe failed: {exc}"
    return None


@dataclass
class Host:
    name: str  # the netns name
    addr: str  # IPv4 address, e.g. "10.213.45.2"
    veth: str  # the outer end of its veth pair (for link up/down)
    sshd_pid: int  # pid (root pid namespace) of the `unshare` holding the host's PID namespace
    via: str = ""  # hidden hosts: the bastion's netns, which holds `veth` and is the only way in


# ---------------------------------------------------------------- /proc helpers


def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, starttime) of a live (non-zombie) process, else None."""
    try:
        raw = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), int(fields[19])


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None and st[0] == pid:
                kids.append(int(entry.name))
    return kids


def _sshd_version() -> tuple[int, int]:
    out = _run(SSHD, "-V", check=False, timeout=10)
    m = re.search(r"OpenSSH_(\d+)\.(\d+)", out.stderr + out.stdout)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _tail(path: pathlib.Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------------- the lab


class Lab:
    user: str = "root"

    def __init__(self, n_hosts: int, root: pathlib.Path, start_timeout: float = 15.0):
        if not 1 <= n_hosts <= 250:
            raise ValueError("n_hosts must be between 1 and 250")
        self.n_hosts = n_hosts
        self.root = pathlib.Path(root).resolve()
        self.start_timeout = start_timeout
        self.key = self.root / "id_ed25519"
        self.hosts: list[Host] = []
        self.bridge = ""
        self.bridge_addr = ""
        self.subnet: ipaddress.IPv4Network | None = None
        self.tag = ""  # <pid><letters>: in every name this lab creates
        self.hidden_subnet: ipaddress.IPv4Network | None = None
        self.hidden_hosts: list[Host] = []  # not in `hosts`: this machine cannot reach them
        self.start_seconds: float | None = None
        # what this lab created, so close() removes exactly that
        self._netns: list[str] = []
        self._veths: list[str] = []
        self._bridge_made = False
        self._unreachable: list[str] = []  # `ip route` arguments of the unreachable routes made
        self._procs: dict[str, subprocess.Popen] = {}
        self._inner: dict[str, tuple[int, int]] = {}  # host name -> (pid, starttime) of its sshd
        self._close_lock = threading.RLock()
        self._closed = False
        self._started = False

    def __enter__(self) -> "Lab":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Lab(bridge={self.bridge!r}, subnet={self.subnet}, hosts={[h.addr for h in self.hosts]})"

    # ------------------------------------------------------------------ start

    def start(self) -> "Lab":
        if self._started:
            raise RuntimeError("Lab.start() called twice")
        self._started = True
        atexit.register(self.close)
        _live_labs.add(self)
        _install_sigterm_cleanup()
        t0 = time.monotonic()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            os.chmod(self.root, 0o700)
            self._make_network()
            self._make_keys()
            self._start_sshds()
            self._wait_ready(t0 + self.start_timeout)
        except BaseException as exc:
            logs = self._logs(self.hosts)
            self.close()
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            raise RuntimeError(f"lab start failed: {exc}\n{logs}") from exc
        self.start_seconds = time.monotonic() - t0
        return self

    def _make_keys(self, hosts: list[Host] | None = None) -> None:
        """The client key (first time only) and a host key for each of ``hosts`` (default: all)."""
        jobs = [(self.key, "lab client")] if hosts is None else []
        for host in self.hosts if hosts is None else hosts:
            hdir = self.root / host.name
            hdir.mkdir(exist_ok=True)
            jobs.append((hdir / "ssh_host_ed25519_key", f"lab host {host.name}"))
        procs = []
        for path, comment in jobs:
            for stale in (path, path.with_name(path.name + ".pub")):
                stale.unlink(missing_ok=True)
            procs.append(
                subprocess.Popen(
                    ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        for (path, _), p in zip(jobs, procs):
            out, _ = p.communicate(timeout=30)
            if p.returncode != 0:
                raise RuntimeError(f"ssh-keygen failed for {path}: {out.strip()}")
        if hosts is not None:
            return
        pub = self.key.with_name(self.key.name + ".pub").read_text()
        (self.root / "authorized_keys").write_text(pub)

    def _existing_names(self) -> tuple[set[str], set[str]]:
        netns = {
            line.split()[0]
            for line in _run("ip", "netns", "list").stdout.splitlines()
            if line.strip()
        }
        links = set()
        for line in _run("ip", "-o", "link", "show").stdout.splitlines():
            m = re.match(r"\d+:\s+([^:@\s]+)", line)
            if m:
                links.add(m.group(1))
        return netns, links

    def _used_networks(self) -> list[ipaddress.IPv4Network]:
        used = []
        for line in _run("ip", "-4", "-o", "addr", "show").stdout.splitlines():
            m = re.search(r"\binet\s+(\S+)", line)
            if m:
                used.append(ipaddress.ip_interface(m.group(1)).network)
        for line in _run("ip", "-4", "route", "show", "table", "all").stdout.splitlines():
            word = line.split()[0] if line.split() else ""
            if word in ("broadcast", "local", "unicast", "multicast", "unreachable", "blackhole", "prohibit", "throw"):
                word = line.split()[1]
            if word and word != "default":
                with contextlib.suppress(ValueError):
                    used.append(ipaddress.ip_network(word, strict=False))
        return used

    def _make_network(self) -> None:
        pid = os.getpid()
        os.makedirs(os.path.dirname(_LOCK_FILE), exist_ok=True)
        # Serialise name and subnet choice with any concurrent lab on this machine.
        with open(_LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            netns_now, links_now = self._existing_names()
            while True:
                with _instances_lock:
                    k = next(_instances)
                tag = f"{pid}{_letters(k)}"
                names = [f"cctl{tag}h{i}" for i in range(self.n_hosts)]
                veths = [f"cv{tag}h{i}" for i in range(self.n_hosts)]
                bridge = f"cb{tag}"
                if len(veths[-1]) > _IFNAMSIZ:
                    raise RuntimeError(f"interface name too long: {veths[-1]}")
                if not (netns_now & set(names)) and not (links_now & {bridge, *veths}):
                    break
            used = self._used_networks()
            for step in range(250):
                net = ipaddress.ip_network(f"10.213.{(pid + step) % 250}.0/24")
                if not any(net.overlaps(u) for u in used):
                    break
            else:
                raise RuntimeError("no free /24 left in 10.213.0.0/16")
            self.subnet = net
            self.tag = tag
            addrs = list(net.hosts())  # .1 ... .254
            self.bridge = bridge
            self.bridge_addr = str(addrs[0])
            _run("ip", "link", "add", bridge, "type", "bridge")
            self._bridge_made = True
            _run("ip", "addr", "add", f"{self.bridge_addr}/24", "dev", bridge)
            _run("ip", "link", "set", bridge, "up")
        self.hosts = [
            Host(name=names[i], addr=str(addrs[i + 1]), veth=veths[i], sshd_pid=0)
            for i in range(self.n_hosts)
        ]
        for host in self.hosts:
            _run("ip", "netns", "add", host.name)
            self._netns.append(host.name)
            _run("ip", "link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.name)
            self._veths.append(host.veth)
            _run("ip", "link", "set", host.veth, "master", bridge)
            _run("ip", "link", "set", host.veth, "up")
            n = ("ip", "-n", host.name)
            _run(*n, "link", "set", "lo", "up")
            _run(*n, "addr", "add", f"{host.addr}/24", "dev", "eth0")
            _run(*n, "link", "set", "eth0", "up")
            _run(*n, "route", "add", "default", "via", self.bridge_addr)

    def _start_sshds(self, hosts: list[Host] | None = None) -> None:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation dir
        extra = "PerSourcePenalties no\n" if _sshd_version() >= (9, 8) else ""
        for host in self.hosts if hosts is None else hosts:
            hdir = self.root / host.name
            config = hdir / "sshd_config"
            config.write_text(
                f"ListenAddress {host.addr}\n"
                "Port 22\n"
                f"HostKey {hdir / 'ssh_host_ed25519_key'}\n"
                f"PidFile {hdir / 'sshd.pid'}\n"
                f"AuthorizedKeysFile {self.root / 'authorized_keys'}\n"
                "PermitRootLogin prohibit-password\n"
                "PubkeyAuthentication yes\n"
                "PasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\n"
                "UsePAM no\n"
                "StrictModes no\n"
                "UseDNS no\n"
                "PrintMotd no\n"
                "PrintLastLog no\n"
                "Subsystem sftp internal-sftp\n"
                "MaxStartups 100:30:200\n"
                "MaxSessions 100\n" + extra
            )
            with open(hdir / "sshd.log", "wb") as log:
                proc = subprocess.Popen(
                    ["ip", "netns", "exec", host.name,
                     "unshare", "--pid", "--fork", "--mount-proc",
                     SSHD, "-D", "-e", "-f", str(config)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self._procs[host.name] = proc
            host.sshd_pid = proc.pid  # `ip netns exec` execs unshare in place

    def _wait_ready(self, deadline: float, hosts: list[Host] | None = None) -> None:
        errors: dict[str, str] = {}

        def wait_one(host: Host) -> None:
            proc = self._procs[host.name]
            last = "sshd never accepted a connection"
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    errors[host.name] = f"sshd on {host.name} exited with {proc.returncode}"
                    return
                self._remember_inner(host)
                try:
                    if not host.via:  # a hidden host: only its bastion could try
                        with socket.create_connection((host.addr, 22), timeout=0.5):
                            pass
                except OSError as exc:
                    last = f"connect {host.addr}:22: {exc}"
                    time.sleep(0.05)
                    continue
                left = max(1.0, deadline - time.monotonic())
                try:
                    res = self.ssh(host, "true", timeout=left)
                except subprocess.TimeoutExpired:
                    last = "ssh true timed out"
                    continue
                if res.returncode == 0:
                    self._remember_inner(host)
                    return
                last = f"ssh true -> {res.returncode}: {res.stderr.strip()}"
                time.sleep(0.1)
            errors[host.name] = f"{host.name} ({host.addr}) not ready in time: {last}"

        threads = [threading.Thread(target=wait_one, args=(h,), daemon=True)
                   for h in (self.hosts if hosts is None else hosts)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()) + 10)
        if errors or any(t.is_alive() for t in threads):
            raise RuntimeError("; ".join(errors.values()) or "hosts not ready in time")

    def hidden(self, bastion: Host, n_hosts: int) -> list[Host]:
        """``n_hosts`` more hosts on a subnet of their own, on a bridge inside ``bastion``'s namespace:
        the bastion reaches them, this machine does not (no route). Removed by :meth:`close`."""
        if not self._started or self._closed or bastion not in self.hosts:
            raise RuntimeError("hidden() needs a started lab and one of its own (not hidden) hosts")
        if self.hidden_hosts:
            raise RuntimeError("one set of hidden hosts per lab")
        t0 = time.monotonic()
        first = len(self.hosts)  # names go on from the lab's hosts: h<n>, h<n+1>, ...
        if len(f"cv{self.tag}h{first + n_hosts}") > _IFNAMSIZ:
            raise RuntimeError("interface name too long")
        with open(_LOCK_FILE, "a") as lock:  # against a lab that starts meanwhile picking names
            fcntl.flock(lock, fcntl.LOCK_EX)
            used = self._used_networks()
            nets = list(HIDDEN_NET.subnets(new_prefix=24))
            for step in range(250):
                net = nets[(os.getpid() + step) % 250]
                if not any(net.overlaps(u) for u in used):
                    break
            else:
                raise RuntimeError(f"no free /24 left in {HIDDEN_NET}")
            route = ["unreachable", str(net), "metric", str(os.getpid())]
            _run("ip", "route", "add", *route)
            self._unreachable.append(" ".join(route))
            addrs = [str(a) for a in net.hosts()]
            hosts = [Host(name=f"cctl{self.tag}h{first + i}", addr=addrs[i + 1], veth=f"cv{self.tag}h{first + i}",
                          sshd_pid=0, via=bastion.name) for i in range(n_hosts)]
            b = ("ip", "-n", bastion.name)
            _run(*b, "link", "add", HIDDEN_BRIDGE, "type", "bridge")
            _run(*b, "addr", "add", f"{addrs[0]}/24", "dev", HIDDEN_BRIDGE)
            _run(*b, "link", "set", HIDDEN_BRIDGE, "up")
            for host in hosts:
                _run("ip", "netns", "add", host.name)
                self._netns.append(host.name)
                self.hidden_hosts.append(host)
                _run(*b, "link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.name)
                _run(*b, "link", "set", host.veth, "master", HIDDEN_BRIDGE)
                _run(*b, "link", "set", host.veth, "up")
                n = ("ip", "-n", host.name)
                _run(*n, "link", "set", "lo", "up")
                _run(*n, "addr", "add", f"{host.addr}/24", "dev", "eth0")
                _run(*n, "link", "set", "eth0", "up")
                _run(*n, "route", "add", "default", "via", addrs[0])
        self.hidden_subnet = net
        try:
            self._make_keys(hosts)
            self._start_sshds(hosts)
            self._wait_ready(t0 + self.start_timeout, hosts)
        except RuntimeError as exc:  # close() removes them with the rest of the lab
            raise RuntimeError(f"hidden hosts did not start: {exc}\n{self._logs(hosts)}") from exc
        return hosts

    def _logs(self, hosts: list[Host]) -> str:
        return "\n".join(f"--- {h.name} sshd.log:\n{_tail(self.root / h.name / 'sshd.log')}" for h in hosts)

    def _remember_inner(self, host: Host) -> None:
        if host.name in self._inner:
            return
        kids = _children(host.sshd_pid)
        if kids:
            st = _stat(kids[0])
            if st is not None:
                self._inner[host.name] = (kids[0], st[1])

    # ------------------------------------------------------------------ close

    def close(self) -> None:
        """Remove every namespace, veth, bridge and process this lab made. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(Exception):
                atexit.unregister(self.close)
            _live_labs.discard(self)
            # 1. processes: kill each host's init (sshd, pid 1 in its PID
            #    namespace) first -- the kernel then kills the whole host --
            #    then the unshare that held it.
            for name, proc in self._procs.items():
                victims = set(_children(proc.pid)) if proc.poll() is None else set()
                inner = self._inner.get(name)
                if inner is not None:
                    st = _stat(inner[0])
                    if st is not None and st[1] == inner[1]:
                        victims.add(inner[0])
                for pid in victims:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            for name, proc in self._procs.items():
                try:
                    proc.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=5)
            for name, (pid, start) in self._inner.items():
                end = time.monotonic() + 5
                while time.monotonic() < end:
                    st = _stat(pid)
                    if st is None or st[1] != start:
                        break
                    time.sleep(0.02)
            # 2. network: namespaces, leftover veths, the bridge.
            for ns in self._netns:
                _ignore_missing("ip", "netns", "del", ns)
            for veth in self._veths:
                if pathlib.Path(f"/sys/class/net/{veth}").exists():
                    _ignore_missing("ip", "link", "del", veth)
            if self._bridge_made:
                _ignore_missing("ip", "link", "del", self.bridge)
            for route in self._unreachable:
                _ignore_missing("ip", "route", "del", *route.split())

    # ------------------------------------------------------------ operations

    def ssh_args(self, host: Host) -> list[str]:
        """The `ssh` command line (without the remote command) for `host`; a hidden host's runs
        in its bastion's namespace, the one place that reaches it."""
        return [
            *(("ip", "netns", "exec", host.via) if host.via else ()),
            "ssh",
            "-F", "/dev/null",  # ignore ~/.ssh/config and /etc/ssh/ssh_config
            "-i", str(self.key),
            "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR",
            "-o", "ConnectTimeout=5",
            "-l", self.user,
            host.addr,
        ]

    def ssh(self, host: Host, command: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run `command` on `host` with the OpenSSH client. Raises subprocess.TimeoutExpired."""
        return subprocess.run(
            [*self.ssh_args(host), "--", command],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def link_down(self, host: Host) -> None:
        _run(*(("ip", "-n", host.via) if host.via else ("ip",)), "link", "set", host.veth, "down")

    def link_up(self, host: Host) -> None:
        _run(*(("ip", "-n", host.via) if host.via else ("ip",)), "link", "set", host.veth, "up")

    def processes(self, host: Host) -> list[tuple[int, str]]:
        """(pid, args) of every process on `host` (pids as seen on the host), except the ps."""
        ps = "ps -eo pid=,args="
        res = self.ssh(host, ps)
        if res.returncode != 0:
            raise RuntimeError(f"ps on {host.name} failed ({res.returncode}): {res.stderr.strip()}")
        out = []
        for line in res.stdout.splitlines():
            pid, _, args = line.strip().partition(" ")
            if pid.isdigit() and args.strip() != ps:
                out.append((int(pid), args.strip()))
        return out

    def unused_addr(self) -> str:
        """An address in the lab subnet that no host (nor the bridge) holds."""
        assert self.subnet is not None, "lab not started"
        return str(list(self.subnet.hosts())[-1])  # .254; hosts use .2 ... .251 at most


def _letters(k: int) -> str:
    s = ""
    k += 1
    while k:
        k, r = divmod(k - 1, 26)
        s = chr(ord("a") + r) + s
    return s


def _ignore_missing(*args: str) -> None:
    with contextlib.suppress(Exception):
        res = _run(*args, check=False, timeout=15)
        err = res.stderr.lower()
        if res.returncode != 0 and not any(
            s in err for s in ("does not exist", "no such", "cannot find", "not found")
        ):
            import warnings

            warnings.warn(f"lab cleanup: {' '.join(args)}: {res.stderr.strip()}", stacklevel=2)


def sweep_stale() -> list[str]:
    """Remove what labs of *dead* processes left behind (after SIGKILL or os._exit).

    Only names of the lab's own pattern (cctl<pid><x>h<i>, cb<pid><x>, cv<pid><x>h<i>) and
    unreachable routes into HIDDEN_NET of metric <pid>, whose <pid> is no longer a running process,
    are touched; every process inside
    such a namespace is killed first.  Not called automatically.  Returns what was removed.
    """

    def dead(pid: str) -> bool:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False
        return False

    removed = []
    out = _run("ip", "netns", "list", check=False).stdout
    for ns in (line.split()[0] for line in out.splitlines() if line.strip()):
        m = re.fullmatch(r"cctl(\d+)[a-z]+h\d+", ns)
        if m and dead(m.group(1)):
            pids = _run("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            for pid in pids:
                end = time.monotonic() + 5
                while pid.isdigit() and _stat(int(pid)) is not None and time.monotonic() < end:
                    time.sleep(0.02)
            _ignore_missing("ip", "netns", "del", ns)
            removed.append(ns)
    for line in _run("ip", "-o", "link", "show", check=False).stdout.splitlines():
        m = re.match(r"\d+:\s+((?:cb(\d+)[a-z]+)|(?:cv(\d+)[a-z]+h\d+))[:@]", line)
        if m and dead(m.group(2) or m.group(3)):
            _ignore_missing("ip", "link", "del", m.group(1))
            removed.append(m.group(1))
    for line in _run("ip", "route", "show", "type", "unreachable", check=False).stdout.splitlines():
        m = re.match(r"unreachable (\S+) .*\bmetric (\d+)", line)
        if m and ipaddress.ip_network(m.group(1), strict=False).subnet_of(HIDDEN_NET) and dead(m.group(2)):
            _ignore_missing("ip", "route", "del", "unreachable", m.group(1), "metric", m.group(2))
            removed.append(f"unreachable {m.group(1)}")
    return removed
