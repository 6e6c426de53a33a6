"""Peak memory of ``predict`` on 10,000 vs 1,000,000 giid-size samples (M = 250, N = 500).

Each measurement runs in a fresh Python process, which loads a model saved by this script
(:func:`sklearn_unfold.persistence.save`), builds the measurements ``Y`` in chunks straight into
one preallocated float64 array, and calls ``predict(Y)`` once. The peak is the operating
system's own accounting: ``resource.getrusage(RUSAGE_SELF).ru_maxrss``, the high-water mark of
the process's resident memory over its whole life (interpreter, torch, model, input and the
predict call; building ``Y`` in chunks peaks lower than predict does).

Four figures are printed per run, each for 10,000 and 1,000,000 samples, with their ratio:

* ``peak``: the whole process, input array included;
* ``peak - input``: the same without the input ``Y`` (``n × 250 × 8`` bytes, 2 GB at 10⁶);
* ``peak - input - output``: the process without the input and without the float64 output
  (``n × 500 × 8`` bytes, 4 GB at 10⁶) that ``predict`` must return. This is the figure that
  chunking by ``batch_size`` bounds and the one the 2× criterion applies to: the input and the
  output scale with ``n`` whatever ``predict`` does. A ``predict`` that keeps every chunk's
  output and then concatenates them holds the output twice, which shows here;
* ``predict working memory``: ``peak - RSS just before predict - output``, what the call
  itself adds beyond its output (its temporaries).

Usage::

    python benchmarks/memory.py                      # AMP and LAMP, 1e4 and 1e6 samples
    python benchmarks/memory.py --sizes 10000 100000 --estimators amp --threads 1

The 10⁶-sample runs need about 2 + 4 + (working) GB of memory (``--threads 1`` when the cores are
shared with other work: torch's threads then oversubscribe). The documentation's benchmarks page
records the figures and the wall times.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from collections import deque

import numpy as np

M, N = 250, 500
_GEN_CHUNK = 10_000


def _vm_rss() -> int:
    """Current resident set size in bytes (``VmRSS`` of /proc/self/status)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0  # pragma: no cover - non-Linux


def _peak_rss() -> int:
    """Peak resident set size of this process in bytes (ru_maxrss is KiB on Linux)."""
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _predict_into_preallocated(est, Y) -> np.ndarray:
    """``predict`` writing each chunk into one preallocated output (diagnostic, see --help)."""
    Y = est._validate_predict_data(Y)
    out = None
    for start in range(0, Y.shape[0], int(est.batch_size)):
        (last,) = deque(est._iterate(Y[start:start + int(est.batch_size)]), maxlen=1)
        chunk = est._format_output(last)
        if out is None:
            out = np.empty((Y.shape[0], *chunk.shape[1:]))
        out[start:start + chunk.shape[0]] = chunk
    return out


def child(model_path: str, n_samples: int, threads: int, preallocated: bool = False) -> dict:
    """One measurement: load the model, build ``Y`` in chunks, predict once, report memory."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    from sklearn_unfold.datasets import BernoulliGaussianPrior
    from sklearn_unfold.persistence import load

    est = load(model_path)
    A = np.asarray(est.A_)
    prior = BernoulliGaussianPrior(sparsity=0.1, var=1.0, n_features=N)
    rng = np.random.default_rng(0)
    Y = np.empty((n_samples, M))
    for start in range(0, n_samples, _GEN_CHUNK):
        stop = min(start + _GEN_CHUNK, n_samples)
        X = prior.sample(stop - start, random_state=int(rng.integers(2**31)))
        np.matmul(X, A.T, out=Y[start:stop])
        Y[start:stop] += np.sqrt(2e-5) * rng.standard_normal((stop - start, M))
    del X
    before = _vm_rss()
    tic = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = _predict_into_preallocated(est, Y) if preallocated else est.predict(Y)
    seconds = time.perf_counter() - tic
    return {"n": n_samples, "peak": _peak_rss(), "before": before, "input": Y.nbytes,
            "output": out.nbytes, "seconds": seconds, "batch_size": int(est.batch_size)}


def _fit_models(names: list[str], folder: str) -> dict[str, str]:
    """Fit each estimator on a small giid training set and save it; return the paths."""
    from sklearn_unfold import AMPRegressor, LAMPRegressor
    from sklearn_unfold.datasets import make_compressed_sensing
    from sklearn_unfold.persistence import save

    Y, X, A = make_compressed_sensing("giid", 2000, random_state=0)
    makers = {
        "amp": lambda: AMPRegressor(A=A, max_iter=3),
        "lamp": lambda: LAMPRegressor(A=A, n_layers=4, max_epochs=1, device="cpu",
                                      random_state=0),
    }
    paths = {}
    for name in names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = makers[name]().fit(Y, X)
        paths[name] = os.path.join(folder, f"{name}.sfu")
        save(est, paths[name])
    return paths


def _measure(path: str, n_samples: int, threads: int, preallocated: bool) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", path, str(n_samples),
                           str(threads), str(int(preallocated))],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"measurement of {n_samples} samples failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _gb(x: float) -> str:
    return f"{x / 1e9:8.3f} GB"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print one table per estimator; return 1 if a ratio exceeds 2."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[10_000, 1_000_000])
    parser.add_argument("--estimators", nargs="+", default=["amp", "lamp"],
                        choices=["amp", "lamp"])
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads in the measuring processes (0: torch's default)")
    parser.add_argument("--preallocated-output", action="store_true",
                        help="diagnostic: measure a predict loop that writes each chunk into "
                             "one preallocated output instead of the estimator's predict")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        path, n, threads, prealloc = args.child
        print(json.dumps(child(path, int(n), int(threads), bool(int(prealloc)))))
        return 0

    small, large = args.sizes
    worst = 0.0
    with tempfile.TemporaryDirectory() as folder:
        paths = _fit_models(args.estimators, folder)
        for name, path in paths.items():
            runs = [_measure(path, n, args.threads, args.preallocated_output)
                    for n in (small, large)]
            rows = {
                "peak (with input)": [r["peak"] for r in runs],
                "peak - input": [r["peak"] - r["input"] for r in runs],
                "peak - input - output": [r["peak"] - r["input"] - r["output"] for r in runs],
                "predict working memory": [r["peak"] - r["before"] - r["output"] for r in runs],
            }
            how = " (preallocated-output loop)" if args.preallocated_output else ""
            print(f"\n{name}{how}: predict on giid (M={M}, N={N}), "
                  f"batch_size={runs[0]['batch_size']}, "
                  f"{runs[0]['seconds']:.1f} s / {runs[1]['seconds']:.1f} s")
            print(f"  {'':30s} {small:>11,d} {large:>11,d}   ratio")
            for label, (a, b) in rows.items():
                ratio = b / max(a, 1)
                print(f"  {label:30s} {_gb(a)} {_gb(b)}  {ratio:6.2f}x")
            print(f"  {'input / output arrays':30s} {_gb(runs[1]['input'])} (input at {large:,d})"
                  f" {_gb(runs[1]['output'])} (output)")
            print(f"  {'RSS before predict':30s} {_gb(runs[0]['before'])} "
                  f"{_gb(runs[1]['before'])}")
            net = rows["peak - input - output"]
            worst = max(worst, net[1] / max(net[0], 1))
    verdict = "within" if worst <= 2 else "NOT within"
    print(f"\nworst ratio of peak - input - output: {worst:.2f}x ({verdict} 2x)")
    return 0 if worst <= 2 else 1


if __name__ == "__main__":
    sys.exit(main())
