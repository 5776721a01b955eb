"""The inventory the SSH-lab benchmarks write (bench/bringup.py, bringup_ab.py, bringup_profile.py,
scale.py): the scheduler on the lab's first host (ports 8786 and 8787), one worker with one thread
on each host of ``workers``, every host reached as root with the lab's key.

Left out, an option is the inventory's default: TLS on, a nanny, distributed's memory limit, the
default connect_timeout and start method.
"""

from __future__ import annotations

from pathlib import Path


def lab_inventory(lab, workdir: Path, workers: list, python: str, *, name: str = "bench", tls: bool = True,
                  nanny: bool = True, memory_limit: str | None = None, connect_timeout: int | None = None,
                  start_method: str | None = None) -> str:
    """The inventory's YAML text. ``lab``: a tests/lab.py ``Lab``; ``workers``: its hosts that run a
    worker; ``python``: the hosts' interpreter (see bringup.host_python)."""
    s = lab.hosts[0]
    lines = [f"name: {name}", *([] if tls else ["tls: off"]), "defaults:"]
    if start_method is not None:
        lines.append(f"  start_method: {start_method}")
    lines += ["  user: root", f"  identity_file: {lab.key}", f"  python: {python}", f"  workdir: {workdir}"]
    if connect_timeout is not None:
        lines.append(f"  connect_timeout: {connect_timeout}")
    lines += ["scheduler:", f"  host: {s.addr}", "  port: 8786", "  dashboard_port: 8787", "workers:"]
    for h in workers:
        lines += [f"  - host: {h.addr}", "    nthreads: 1"]
        if not nanny:
            lines.append("    nanny: false")
        if memory_limit is not None:
            lines.append(f"    memory_limit: {memory_limit}")
    return "\n".join(lines) + "\n"
