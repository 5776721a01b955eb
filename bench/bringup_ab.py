"""`clusterctl up` of two variants on one SSH lab, alternating: what one change is worth.

    python bench/bringup_ab.py --old REV [--workers 8] [--repeat 6] [--old-hosts client] [--name NAME]

"new" is this checkout; "old" is clusterctl at git revision REV (checked out into a temporary
worktree and put first on the client's PYTHONPATH; the agent the hosts run comes from the client,
so it is REV's too). The hosts run bench/bringup.py's host_python, or, for "old" with
`--old-hosts client`, the client's own interpreter (as the lab's hosts did before this bench gave
them their own; compare `--old HEAD --old-hosts client`). Each round runs `up` (tls off) then
`down` of both, in alternating order, and records the wall time of `up` and the CPU the whole
machine spent during it (/proc/stat). Prints the medians and writes bench/results/<name>.json.
Needs root (the lab); the machine should be otherwise idle.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bringup import PYTHON, host_python, inventory, machine, timed  # noqa: E402
from lab import Lab, lab_prerequisites  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, help="git revision to compare this checkout with")
    parser.add_argument("--old-hosts", choices=["host", "client"], default="host",
                        help="the hosts' interpreter for the old variant (default: host_python, as for new)")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=6)
    parser.add_argument("--name", default="bringup-ab")
    args = parser.parse_args()
    reason = lab_prerequisites()
    if reason:
        print(f"bench needs the SSH lab: {reason}", file=sys.stderr)
        return 2
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.old], check=True,
                         capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tmp / "old"), rev], check=True,
                       capture_output=True)
        try:
            with Lab(args.workers + 1, tmp / "lab") as lab:
                hosts = host_python(tmp / "host-python")
                variants = {"new": (None, hosts), "old": (tmp / "old", hosts if args.old_hosts == "host" else PYTHON)}
                # Bytecode, as `pip install` leaves it (see bringup.py).
                subprocess.run([PYTHON, "-m", "compileall", "-q", str(ROOT / "clusterctl"), str(tmp / "old" / "clusterctl")],
                               check=True, capture_output=True)
                runs: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
                for i in range(args.repeat):
                    for name in ("new", "old") if i % 2 == 0 else ("old", "new"):
                        tree, python = variants[name]
                        inv = tmp / f"{name}.yaml"
                        inv.write_text(inventory(lab, tmp / "work", args.workers, False, python).replace(
                            "name: bench", f"name: ab-{name}"))
                        env = {**os.environ, "CLUSTERCTL_HOME": str(tmp / f"home-{name}")}
                        if tree is not None:
                            env["PYTHONPATH"] = str(tree)
                        # cwd: not this checkout, whose clusterctl `python -m` would import first.
                        runs[name].append(timed([PYTHON, "-m", "clusterctl", "up", str(inv)], env, tmp))
                        time.sleep(0.5)
                        timed([PYTHON, "-m", "clusterctl", "down"], env, tmp)
                        time.sleep(1.0)
                        print(f"  {name} #{len(runs[name])}: up {runs[name][-1][0]:.2f} s, "
                              f"{runs[name][-1][1]:.2f} s of CPU", file=sys.stderr)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tmp / "old")],
                           capture_output=True)
    result = {"machine": machine(), "old": rev, "old_hosts": args.old_hosts, "workers": args.workers,
              "repeat": args.repeat, "runs": runs,
              "medians": {name: {"up": round(statistics.median(t for t, _ in rs), 3),
                                 "up_cpu": round(statistics.median(c for _, c in rs), 2)} for name, rs in runs.items()}}
    for name in ("old", "new"):
        m = result["medians"][name]
        label = f"{rev}" + (", hosts on the client's python" if name == "old" and args.old_hosts == "client" else "")
        print(f"{name} ({label if name == 'old' else 'this checkout'}): up {m['up']:.2f} s, {m['up_cpu']:.2f} s of CPU"
              f" (medians of {args.repeat}, {args.workers} workers)")
    out = ROOT / "bench" / "results" / f"{args.name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
