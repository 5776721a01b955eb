"""This checkout against clusterctl at a git revision, on one SSH lab, alternating: what a change costs.

    python bench/bringup_ab.py --old REV [--workers 8] [--repeat 6] [--tls] [--start-method M] [--name NAME]

"new" is this checkout; "old" is clusterctl at git revision REV (checked out into a temporary
worktree and put first on the client's PYTHONPATH; the agent the hosts run comes from the client,
so it is REV's too). Both run the same hosts' interpreter (bench/bringup.py's host_python). Each
round runs, for both variants in alternating order: `up`, a no-op `up`, `status`, `down`, and
records each command's wall time (and the CPU the whole machine spent during `up`, from
/proc/stat). --start-method gives both variants' workers that start method (default: each
variant's own default). Prints the medians and the median of the per-round ratios new/old, and writes
bench/results/<name>.json. Needs root (the lab); the machine should be otherwise idle.
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

from bringup import PYTHON, host_python, machine, timed  # noqa: E402
from lab import Lab, lab_prerequisites  # noqa: E402
from lab_inventory import lab_inventory  # noqa: E402

STEPS = ("up", "up_cpu", "noop_up", "status", "down")


def one_round(name: str, tree: Path, lab: Lab, tmp: Path, workers: int, tls: bool, python: str,
              start_method: str | None) -> dict:
    inv = tmp / f"{name}.yaml"
    inv.write_text(lab_inventory(lab, tmp / "work", lab.hosts[1:workers + 1], python, name=f"ab-{name}", tls=tls,
                                 start_method=start_method))
    # Each variant's clusterctl first on the path, whatever the environment has installed.
    env = {**os.environ, "CLUSTERCTL_HOME": str(tmp / f"home-{name}"), "PYTHONPATH": str(tree)}
    cli = [PYTHON, "-m", "clusterctl"]
    # cwd: not this checkout, whose clusterctl `python -m` would import first.
    up, up_cpu = timed(cli + ["up", str(inv)], env, tmp)
    noop, _ = timed(cli + ["up", str(inv)], env, tmp)
    status, _ = timed(cli + ["status"], env, tmp)
    down, _ = timed(cli + ["down"], env, tmp)
    return {"up": up, "up_cpu": up_cpu, "noop_up": noop, "status": status, "down": down}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, help="git revision to compare this checkout with")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=6)
    parser.add_argument("--tls", action="store_true", help="the default TLS (else tls: off, as bringup.py's first column)")
    parser.add_argument("--start-method", choices=["spawn", "fork"], help="for both variants' workers")
    parser.add_argument("--name", default="bringup-ab")
    args = parser.parse_args()
    reason = lab_prerequisites()
    if reason:
        print(f"bench needs the SSH lab: {reason}", file=sys.stderr)
        return 2
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.old], check=True,
                         capture_output=True, text=True).stdout.strip()
    runs: dict[str, list[dict]] = {"new": [], "old": []}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tmp / "old"), rev], check=True,
                       capture_output=True)
        try:
            with Lab(args.workers + 1, tmp / "lab") as lab:
                python = host_python(tmp / "host-python")
                trees = {"new": ROOT, "old": tmp / "old"}
                # Bytecode, as `pip install` leaves it (see bringup.py).
                subprocess.run([PYTHON, "-m", "compileall", "-q", str(ROOT / "clusterctl"), str(tmp / "old" / "clusterctl")],
                               check=True, capture_output=True)
                for i in range(args.repeat):
                    for name in ("new", "old") if i % 2 == 0 else ("old", "new"):
                        runs[name].append(one_round(name, trees[name], lab, tmp, args.workers, args.tls, python,
                                                     args.start_method))
                        print(f"  {name} #{len(runs[name])}: " + ", ".join(f"{k} {v:.2f}" for k, v in runs[name][-1].items()),
                              file=sys.stderr)
                        time.sleep(1.0)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tmp / "old")],
                           capture_output=True)
    medians = {name: {k: round(statistics.median(r[k] for r in rs), 3) for k in STEPS} for name, rs in runs.items()}
    ratios = {k: round(statistics.median(n[k] / o[k] for n, o in zip(runs["new"], runs["old"])), 3) for k in STEPS}
    result = {"machine": machine(), "old": rev, "workers": args.workers, "tls": args.tls,
              "start_method": args.start_method, "repeat": args.repeat,
              "medians": medians, "ratio_new_over_old": ratios, "runs": runs}
    print(f"| {args.workers} workers{' TLS' if args.tls else ''} | " + " | ".join(STEPS) + " |")
    print("|---|" + "---|" * len(STEPS))
    for name, label in (("old", rev), ("new", "this checkout")):
        print(f"| {label} | " + " | ".join(f"{medians[name][k]:.2f}" for k in STEPS) + " |")
    print("| new/old (median of rounds) | " + " | ".join(f"{ratios[k]:.2f}" for k in STEPS) + " |")
    out = ROOT / "bench" / "results" / f"{args.name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
