"""The CPU one agent costs a host, and one login shell, measured on a lab host.

    python bench/agent_cost.py [--repeat 20] [--agent FILE]

Makes a one-host lab (tests/lab.py) and, on that host (its own network and PID namespaces, through
SSH), starts the agent as `up` does (`<python> -c <remote.BOOT> serve`, then what it reads on stdin)
--repeat times for each row, alternating: its source compiled on the host, or the compiled code sent
with it (remote.agent_payload; the lab's host runs the client's Python version), each with no request
and answering one probe as `up`'s (two ports to check, nothing alive to look for, nothing to hold).
Also a bare `python -c pass`, and `bash -c true` started as sshd starts a command's shell (it reads
~/.bashrc). The CPU is getrusage of the children, on the host. `--agent FILE` measures another agent
source (compiled on the host only), e.g. an older one: `git show REV:clusterctl/agent.py > FILE`.
Prints only; needs root (the lab).
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

# Runs on the host: python, the two payloads (source only; source and code), repeat.
ON_HOST = r"""
import json, os, resource, subprocess, sys
python, compile_here, code_sent, repeat, boot = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
probe = json.dumps({"op": "probe", "ports": [8786, 8787], "bind": "127.0.0.1", "check": [], "hold": []}).encode() + b"\n"

def cpu(argv, stdin=b"", env=None):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, input=stdin, stdout=subprocess.DEVNULL, env=env, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000

login = {k: v for k, v in os.environ.items() if k != "SHLVL"}  # as sshd starts it: a top-level shell
payloads = {"source compiled on the host": open(compile_here, "rb").read()}
if code_sent != "-":
    payloads["compiled code sent"] = open(code_sent, "rb").read()
runs = {"python -c pass": [], "login shell (bash -c true)": []}
for _ in range(repeat):
    runs["python -c pass"].append(cpu([python, "-c", "pass"]))
    for name, payload in payloads.items():
        for what, extra in (("no request", b""), ("one probe", probe)):
            runs.setdefault("agent, %s, %s" % (name, what), []).append(cpu([python, "-c", boot, "serve"], payload + extra))
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
    import zlib

    from clusterctl.remote import BOOT, agent_payload

    with tempfile.TemporaryDirectory() as tmpdir, Lab(1, Path(tmpdir) / "lab") as lab:
        python = host_python(Path(tmpdir) / "host-python")
        script = Path(tmpdir) / "on_host.py"
        script.write_text(ON_HOST)
        source = Path(args.agent).read_bytes()
        compile_here = Path(tmpdir) / "compile-here"
        body = zlib.compress(source)
        compile_here.write_bytes(b"%d %d -\n" % (len(body), len(source)) + body)
        code_sent = "-"
        if Path(args.agent).resolve() == (ROOT / "clusterctl" / "agent.py").resolve():
            code_sent = str(Path(tmpdir) / "code-sent")
            Path(code_sent).write_bytes(agent_payload())
        command = shlex.join([PYTHON, str(script), python, str(compile_here), code_sent, str(args.repeat), BOOT])
        done = lab.ssh(lab.hosts[0], command, timeout=600)
        if done.returncode != 0:
            print(done.stderr[-2000:], file=sys.stderr)
            return 1
        runs = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"CPU ms on a lab host, median (min-max) of {args.repeat}, agent {args.agent}:")
    for name, values in runs.items():
        print(f"  {name:55} {statistics.median(values):6.1f}  ({min(values):.1f}-{max(values):.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
