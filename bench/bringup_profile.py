"""Where one `clusterctl up` spends its CPU on the SSH lab, host by host.

    python bench/bringup_profile.py [--workers 8] [--repeat 3]

Makes a lab of N+1 hosts (tests/lab.py) and puts each host's sshd, with everything it starts (login
shell, agent, scheduler or nanny and worker), in its own cgroup, and the client in another (cgroup v1
`cpuacct`, as on this project's build machine; needs root). Then, --repeat times, `clusterctl up`
(tls off) and `down`: each up's timeline in 0.1 s steps (cores busy on the whole machine, the
client's and each host's share of a core) and the CPU seconds of the client and of each host, with
the long-lived processes' own share on the first hosts.
Prints only; it is a profiling aid for bench/bringup.py's numbers, not a benchmark of its own.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bringup import PYTHON, busy, host_python  # noqa: E402
from lab import Lab, _children, lab_prerequisites  # noqa: E402
from lab_inventory import lab_inventory  # noqa: E402

CGROUPS = Path("/sys/fs/cgroup/cpuacct")


def tree(pid: int) -> list[int]:
    out = [pid]
    for child in _children(pid):
        out += tree(child)
    return out


def usage(group: Path) -> float:
    return int((group / "cpuacct.usage").read_text()) / 1e9


def own_cpu(pid: int) -> tuple[float, str] | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), cmd


def up(argv: list[str], env: dict, client: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["sh", "-c", f'echo $$ > {client}/cgroup.procs; exec "$@"', "sh", *argv],
                   env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def profile(groups: dict[str, Path], client: Path, argv: list[str], env: dict) -> None:
    samples: list[tuple[float, float, float, list[float]]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.perf_counter(), busy(), usage(client), [usage(g) for g in groups.values()]))
            time.sleep(0.1)

    before = {k: usage(g) for k, g in groups.items()}
    client_before = usage(client)
    thread = threading.Thread(target=sample)
    thread.start()
    start = time.perf_counter()
    try:
        took = up(argv, env, client)
    finally:
        stop.set()
        thread.join()
    print(f"\nup {took:.2f} s\n     t  cores  client  " + " ".join(f"{k[-3:]:>5}" for k in groups))
    for a, b in zip(samples, samples[1:]):
        dt = b[0] - a[0]
        print(f"  {b[0] - start:4.1f}  {(b[1] - a[1]) / dt:5.1f}  {(b[2] - a[2]) / dt:6.2f}  "
              + " ".join(f"{(y - x) / dt:5.2f}" for x, y in zip(a[3], b[3])))
    used = {k: usage(g) - before[k] for k, g in groups.items()}
    print(f"CPU s: client {usage(client) - client_before:.2f}, hosts {sum(used.values()):.2f}: "
          + " ".join(f"{v:.2f}" for v in used.values()))
    for name, group in list(groups.items())[:2]:
        procs = [own_cpu(int(p)) for p in (group / "cgroup.procs").read_text().split()]
        print(f"  {name} still running:", ", ".join(f"{c:.2f} s {cmd[:90]}" for c, cmd in filter(None, procs)
                                                   if "sshd" not in cmd and "unshare" not in cmd))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    reason = lab_prerequisites() or (None if (CGROUPS / "cgroup.procs").exists() else
                                     f"no cgroup v1 cpuacct hierarchy at {CGROUPS}")
    if reason:
        print(f"bench needs the SSH lab and cpuacct: {reason}", file=sys.stderr)
        return 2
    n = args.workers
    with tempfile.TemporaryDirectory() as tmp, Lab(n + 1, Path(tmp) / "lab") as lab:
        groups = {h.name: CGROUPS / f"clusterctl-bench-{h.name}" for h in lab.hosts}
        client = CGROUPS / f"clusterctl-bench-client-{os.getpid()}"
        try:
            for h in lab.hosts:
                groups[h.name].mkdir()
                for pid in tree(h.sshd_pid):
                    (groups[h.name] / "cgroup.procs").write_text(str(pid))
            client.mkdir()
            inv = Path(tmp) / "inventory.yaml"
            python = host_python(Path(tmp) / "host-python")
            inv.write_text(lab_inventory(lab, Path(tmp) / "work", lab.hosts[1:n + 1], python, tls=False))
            env = {**os.environ, "CLUSTERCTL_HOME": str(Path(tmp) / "home"), "PYTHONPATH": str(ROOT)}
            for _ in range(args.repeat):
                profile(groups, client, [PYTHON, "-m", "clusterctl", "up", str(inv)], env)
                subprocess.run([PYTHON, "-m", "clusterctl", "down"], env=env, check=True, capture_output=True)
        finally:
            for group in [*groups.values(), client]:
                if group.exists():
                    for pid in (group / "cgroup.procs").read_text().split():
                        try:
                            (CGROUPS / "cgroup.procs").write_text(pid)
                        except OSError:
                            pass
                    group.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
