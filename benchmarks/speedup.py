"""Training time and accuracy of the learned estimators' defaults, against an earlier commit.

Runs configurations of ``benchmarks/learned.py`` (defaults, 20,000 reference pairs, a fresh test
set of 1,000) twice each, in one run and alternating: with the package of an earlier commit
(checked out into a temporary ``git worktree``) and with the working tree's. Each run is its
own Python process (``learned.py --no-peers``, the process's one-time import costs included in
neither figure: the fit is timed inside). It prints, per configuration, the training wall time
and the test NMSE at the target depth for both, the speed-up (earlier time / current time) and
the target of the configuration. The machines are shared and noisy: the ratio, measured
back to back, is the figure that counts.

Usage::

    python benchmarks/speedup.py --baseline 38a4673 --threads 2
    python benchmarks/speedup.py --baseline 38a4673 --configs lamp10 --repeat 2

``--set PARAM=VALUE`` is passed to both runs (both must know the parameter).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: label: (learned.py configuration, extra --set arguments, target (dB, seconds))
RUNS: dict[str, tuple[str, list[str], tuple[float, float]]] = {
    "LAMP-bg, 10 layers, from the pairs": ("lamp10", [], (-44.5, 30.0)),
    "LAMP-bg, 6 layers, signal_prior": ("lamp6-prior", [], (-36.5, 90.0)),
    "LISTA, 16 layers, signal_prior": ("lista16-prior", [], (-40.0, 180.0)),
    "LDVAMP-bg, 10 layers, kappa15": ("ldvamp10-kappa15", [], (-43.8, 60.0)),
    "LDVAMP-bg, 10 layers, kappa15, signal_prior": (
        "ldvamp10-kappa15", ["signal_prior='bernoulli_gaussian'"], (-43.8, 60.0)),
}

_TIME = re.compile(r"training wall time: ([0-9.]+) s \((\d+) optimiser steps, (\d+) stages\)")
_TARGET = re.compile(r"at (\d+) layers: (-?[0-9.]+) dB")


def _run(tree: Path, config: str, sets: list[str], threads: int | None, device: str) -> dict:
    cmd = [sys.executable, str(tree / "benchmarks" / "learned.py"), "--configs", config,
           "--no-peers", "--device", device]
    if threads:
        cmd += ["--threads", str(threads)]
    if sets:
        cmd += ["--set", *sets]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=False)
    text = out.stdout + out.stderr
    t, d = _TIME.search(text), _TARGET.search(text)
    if out.returncode or t is None or d is None:
        raise RuntimeError(f"{' '.join(cmd)} (in {tree}) failed:\n{text[-3000:]}")
    return {"seconds": float(t.group(1)), "steps": int(t.group(2)), "stages": int(t.group(3)),
            "nmse_db": float(d.group(2))}


def _check_package_origin(tree: Path) -> None:
    """Make sure a process run with ``PYTHONPATH=tree`` imports the package from ``tree``."""
    code = "import sklearn_unfold, sys; sys.stdout.write(sklearn_unfold.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(tree)}, check=True).stdout
    if not Path(out).resolve().is_relative_to(tree.resolve()):
        raise RuntimeError(f"with PYTHONPATH={tree}, sklearn_unfold is imported from {out}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", required=True, help="the earlier commit (any git revision)")
    parser.add_argument("--configs", nargs="*", default=None,
                        help=f"which runs, by configuration name (default: all of "
                             f"{sorted({c for c, _, _ in RUNS.values()})})")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=1, help="alternating pairs per run")
    parser.add_argument("--set", nargs="*", default=[], metavar="PARAM=VALUE")
    args = parser.parse_args(argv)
    commit = subprocess.run(["git", "rev-parse", "--short", args.baseline], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.strip()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.strip()
    runs = {k: v for k, v in RUNS.items() if args.configs is None or v[0] in args.configs}
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / f"baseline-{commit}"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), commit], cwd=ROOT,
                       capture_output=True, check=True)
        try:
            _check_package_origin(old)
            _check_package_origin(ROOT)
            print(f"baseline {commit} against the working tree (HEAD {head}"
                  f"{', with uncommitted changes' if dirty else ''}); device {args.device}, "
                  f"threads {args.threads or 'default'}")
            rows = []
            for label, (config, sets, (goal_db, goal_s)) in runs.items():
                for rep in range(args.repeat):
                    before = _run(old, config, sets + args.set, args.threads, args.device)
                    after = _run(ROOT, config, sets + args.set, args.threads, args.device)
                    rows.append((label, rep, before, after, goal_db, goal_s))
                    ok = after["nmse_db"] <= goal_db and after["seconds"] <= goal_s
                    print(f"\n{label} (run {rep + 1}):\n"
                          f"  {commit:>9}: {before['nmse_db']:7.2f} dB in {before['seconds']:6.1f} s "
                          f"({before['steps']} steps, {before['stages']} stages)\n"
                          f"  {'now':>9}: {after['nmse_db']:7.2f} dB in {after['seconds']:6.1f} s "
                          f"({after['steps']} steps, {after['stages']} stages)\n"
                          f"  speed-up {before['seconds'] / after['seconds']:.2f}x; target "
                          f"<= {goal_db} dB in <= {goal_s:.0f} s: {'met' if ok else 'NOT met'}",
                          flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT,
                           capture_output=True, check=False)
    print("\n| configuration | before (dB, s) | now (dB, s) | speed-up | target |")
    print("|---|---|---|---|---|")
    for label, _rep, b, a, goal_db, goal_s in rows:
        print(f"| {label} | {b['nmse_db']:.2f}, {b['seconds']:.1f} | {a['nmse_db']:.2f}, "
              f"{a['seconds']:.1f} | {b['seconds'] / a['seconds']:.2f}x | <= {goal_db} dB, "
              f"<= {goal_s:.0f} s |")


if __name__ == "__main__":
    main()
