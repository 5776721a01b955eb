"""The CPU one agent costs a host, and one login shell, measured on a lab host.

    python bench/agent_cost.py [--repeat 20] [--agent FILE]

Makes a one-host lab (tests/lab.py) and, on that host (its own network and PID namespaces, through
SSH), runs the agent as `up` starts it (`<python> -c <remote.BOOT> serve`, its source on stdin) --repeat
times, alternating: with no request, then answering one probe as `up`'s (two ports to check, nothing
alive to look for, nothing to hold). It reports the CPU of each (getrusage of the children, on the
host), of a bare `python -c pass`, and of `bash -c true` started as sshd starts a command's shell
(which reads ~/.bashrc). `--agent FILE` measures another agent source, e.g. an older one:
`git show REV:clusterctl/agent.py > /tmp/agent-REV.py`. Prints only; needs root (the lab).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bringup import PYTHON, host_python  # noqa: E402
from lab import Lab, lab_prerequisites  # noqa: E402

# Runs on the host, with the lab's host python as sys.argv[1].
ON_HOST = r"""
import json, os, resource, subprocess, sys
python, agent, repeat, boot = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
source = open(agent, "rb").read()
probe = {"op": "probe", "ports": [8786, 8787], "bind": "127.0.0.1", "check": [], "hold": []}

def cpu(argv, stdin=b"", env=None):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, input=stdin, stdout=subprocess.DEVNULL, env=env, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000

login = {k: v for k, v in os.environ.items() if k != "SHLVL"}  # as sshd starts it: a top-level shell
runs = {"python -c pass": [], "agent, no request": [], "agent, one probe": [], "login shell (bash -c true)": []}
for _ in range(repeat):
    runs["python -c pass"].append(cpu([python, "-c", "pass"]))
    runs["agent, no request"].append(cpu([python, "-c", boot, "serve"], b"%d\n" % len(source) + source))
    runs["agent, one probe"].append(cpu([python, "-c", boot, "serve"],
                                        b"%d\n" % len(source) + source + json.dumps(probe).encode() + b"\n"))
    runs["login shell (bash -c true)"].append(cpu(["bash", "-c", "true"], env=login))
print(json.dumps(runs))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--agent", default=str(ROOT / "clusterctl" / "agent.py"))
    args = parser.parse_args()
    reason = lab_prerequisites()
    if reason:
        print(f"bench needs the SSH lab: {reason}", file=sys.stderr)
        return 2
    import json
    import shlex
    import statistics

    from clusterctl.remote import BOOT

    with tempfile.TemporaryDirectory() as tmpdir, Lab(1, Path(tmpdir) / "lab") as lab:
        python = host_python(Path(tmpdir) / "host-python")
        script = Path(tmpdir) / "on_host.py"
        script.write_text(ON_HOST)
        command = shlex.join([PYTHON, str(script), python, str(Path(args.agent).resolve()), str(args.repeat), BOOT])
        done = lab.ssh(lab.hosts[0], command, timeout=600)
        if done.returncode != 0:
            print(done.stderr[-2000:], file=sys.stderr)
            return 1
        runs = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"CPU ms on a lab host, median (min-max) of {args.repeat}, agent {args.agent}:")
    for name, values in runs.items():
        print(f"  {name:28} {statistics.median(values):6.1f}  ({min(values):.1f}-{max(values):.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
