"""Dask scale-out: a distributed grid search against the serial one, and out-of-core prediction.

(a) **Search.** ``GridSearchCV`` over 8 LAMP candidates (``n_layers`` in [4, 6], ``tied`` in
[True, False], two learning rates; giid, N = 500, M = 250, 2,000 training pairs from
``make_compressed_sensing("giid", 2000, random_state=0)``, ``max_epochs=1``,
``random_state=0``, 3-fold CV) serially in this process with ``torch.set_num_threads(2)``, and
under ``joblib.parallel_config(backend="dask")`` on a
``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)`` whose workers were given
their share of the cores by :func:`sklearn_unfold.distributed.configure_workers` (one torch
thread each on 2 cores). Prints both wall times (the cluster's start-up and its workers' first
imports are timed apart, not in the search), the speed-up, whether ``best_params_`` agree and
the largest absolute difference of ``cv_results_["mean_test_score"]``: the serial search runs
torch on 2 threads and the workers on 1, so float32 training does its reductions in another
order and the scores may differ in the last digits.

(b) **Out-of-core prediction.** A fitted ``AMPRegressor(A=A, max_iter=10)`` predicts
``--n-samples`` (default 1,000,000) giid measurements that are generated lazily on the
workers (a Dask array built with ``map_blocks`` of the measurement model ``Y = X Aᵀ + W``, one
seeded block of ``--chunk-size`` rows at a time: the measurements never exist whole), and
:func:`sklearn_unfold.distributed.predict_to_npy` has the workers write the estimates block by
block into a memory-mapped ``.npy`` file. The same is run for 100,000 samples first. For each
run it prints the wall time, the resident memory (RSS) of this client process and of each
worker before the run and its peak during it (sampled every 50 ms, in the workers through
``client.run``; with psutil when installed, else from ``/proc``), and the throughput per core
(samples per second over the 2 worker cores, data generation included), next to in-memory
``predict`` of a 20,000-sample array in this process on one torch thread.

The workers start with glibc's default memory allocator settings: Dask's nanny sets
``MALLOC_TRIM_THRESHOLD_=65536`` in new worker processes by default, which makes every large
temporary tensor a fresh ``mmap`` and AMP about 2x slower; ``--keep-malloc-trim`` measures
with Dask's default instead.

Usage::

    python benchmarks/distributed.py                  # the full run (figures: the Scaling out page)
    python benchmarks/distributed.py --quick          # a small version (see --help)
    python benchmarks/distributed.py --n-samples 200000 --skip-search

The ``.npy`` outputs go to a temporary directory (``--out-dir`` to choose; 1,000,000 estimates
of 500 entries take 4 GB) and are deleted at the end. Timings on a machine shared with other
work are noisy; run it on an otherwise idle one.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, KFold

from sklearn_unfold import AMPRegressor, LAMPRegressor
from sklearn_unfold.datasets import make_compressed_sensing

# This file is named like the ``distributed`` package: drop its folder from the import path (it
# is the first entry when the script is run) so that ``import distributed`` finds the package.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

try:
    import dask
    import dask.array as da
    import joblib
    from distributed import Client, LocalCluster

    from sklearn_unfold.distributed import configure_workers, predict_to_npy
except ImportError:  # pragma: no cover
    sys.exit('this benchmark needs Dask: pip install "sklearn-unfold[distributed]"')

try:
    import psutil
except ImportError:  # pragma: no cover
    psutil = None

N_WORKERS = 2


def _quiet() -> None:
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    warnings.filterwarnings("ignore", category=UserWarning)


def _rss_mib() -> float:
    """This process's resident memory now, in MiB (psutil, else /proc, else the peak so far)."""
    if psutil is not None:
        return psutil.Process().memory_info().rss / 2**20
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError, AttributeError):  # not Linux
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024


class _RSSSampler:
    """The RSS of this process before a block of work and its peak (sampled every 50 ms)."""

    def start(self) -> _RSSSampler:
        self.before = self.peak = _rss_mib()
        self._stop = threading.Event()

        def sample():
            while not self._stop.wait(0.05):
                self.peak = max(self.peak, _rss_mib())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> tuple[float, float]:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mib())
        return self.before, self.peak

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _start_worker_sampler(dask_worker=None) -> float:
    """Start sampling this worker's RSS (``client.run``); returns the RSS before the run."""
    dask_worker._unfold_benchmark_rss = _RSSSampler().start()
    return dask_worker._unfold_benchmark_rss.before


def _stop_worker_sampler(dask_worker=None) -> tuple[float, float]:
    return dask_worker.__dict__.pop("_unfold_benchmark_rss").stop()


def _warm_worker(dask_worker=None) -> int:
    """Import what the search's tasks import, so the timed search does not pay for it."""
    import sklearn.model_selection._validation  # noqa: F401

    import sklearn_unfold  # noqa: F401

    _quiet()
    return os.getpid()


# ------------------------------------------------------------------------------------ (a)
def search(client, n_train: int, cv: int) -> None:
    Y, X, A = make_compressed_sensing("giid", n_train, random_state=0)
    est = LAMPRegressor(A=A, max_epochs=1, device="cpu", random_state=0)
    grid = {"n_layers": [4, 6], "tied": [True, False], "learning_rate": [1e-3, 3e-3]}
    folds = KFold(cv, shuffle=True, random_state=0)
    print(f"\n(a) GridSearchCV: 8 LAMP candidates x {cv} folds, giid N=500 M=250, "
          f"{n_train} training pairs, max_epochs=1")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # what one core does: the ideal 2-worker time is half of it
        tic = time.perf_counter()
        GridSearchCV(est, grid, cv=folds).fit(Y, X)
        t_one = time.perf_counter() - tic
        torch.set_num_threads(2)
        tic = time.perf_counter()
        serial = GridSearchCV(est, grid, cv=folds).fit(Y, X)
        t_serial = time.perf_counter() - tic
    finally:
        torch.set_num_threads(before)
    tic = time.perf_counter()
    with joblib.parallel_config(backend="dask"):
        dist = GridSearchCV(est, grid, cv=folds).fit(Y, X)
    t_dist = time.perf_counter() - tic
    diff = np.max(np.abs(dist.cv_results_["mean_test_score"]
                         - serial.cv_results_["mean_test_score"]))
    print(f"  serial (torch 1 thread)           {t_one:8.2f} s   (2 threads are "
          f"{t_one / t_serial:.2f}x faster than 1)")
    print(f"  serial (torch 2 threads)          {t_serial:8.2f} s")
    print(f"  dask, 2 workers x 1 thread        {t_dist:8.2f} s   speed-up {t_serial / t_dist:.2f}x")
    print(f"  best_params_ equal: {dist.best_params_ == serial.best_params_}  "
          f"(dask {dist.best_params_}, serial {serial.best_params_})")
    print(f"  max |mean_test_score difference|: {diff:.3g}")


# ------------------------------------------------------------------------------------ (b)
def _measure_block(A: np.ndarray, noise_var: float, sparsity: float, seed: int,
                   block_info=None) -> np.ndarray:
    """One block of ``Y = X Aᵀ + W`` (Bernoulli-Gaussian ``X``), seeded by its position."""
    info = block_info[None]
    (start, stop), _ = info["array-location"]
    rng = np.random.default_rng([seed, start])
    n, (M, N) = stop - start, A.shape
    X = rng.standard_normal((n, N)) * (rng.random((n, N)) < sparsity)
    return X @ A.T + np.sqrt(noise_var) * rng.standard_normal((n, M))


def lazy_measurements(A: np.ndarray, noise_var: float, n: int, chunk: int, seed: int = 1):
    """A Dask array of ``n`` giid measurements, each block generated where it is computed."""
    rows = (chunk,) * (n // chunk) + ((n % chunk,) if n % chunk else ())
    A_once = dask.delayed(A, name="benchmark-A", traverse=False)
    return da.map_blocks(_measure_block, A_once, noise_var, 0.1, seed,
                         chunks=(rows, (A.shape[0],)), dtype=np.float64,
                         meta=np.empty((0, 0)))


def out_of_core(client, sizes: list[int], chunk: int, n_memory: int, max_iter: int,
                out_dir: str) -> None:
    Y, X, A, noise_var = make_compressed_sensing("giid", 2000, random_state=0,
                                                 return_noise_var=True)
    amp = AMPRegressor(A=A, max_iter=max_iter).fit(Y, X)
    cores = sum(w["nthreads"] for w in client.scheduler_info()["workers"].values())
    print(f"\n(b) out-of-core predict: AMPRegressor(max_iter={max_iter}), giid N=500 M=250, "
          f"blocks of {chunk} rows generated lazily on {cores} worker cores, estimates "
          "written to a memory-mapped .npy")
    print("  RSS in MiB: before the run -> its peak during the run (sampled every 50 ms)")
    print(f"  {'samples':>10} {'wall (s)':>9} {'samples/s/core':>15} {'client RSS':>12}   "
          "worker RSS")
    rates = {}
    for n in sizes:
        path = os.path.join(out_dir, f"x_hat_{n}.npy")
        Yd = lazy_measurements(A, noise_var, n, chunk)
        client.run(_start_worker_sampler)
        with _RSSSampler() as rss:
            tic = time.perf_counter()
            out = predict_to_npy(amp, Yd, path, chunk_size=chunk)
            wall = time.perf_counter() - tic
        workers = client.run(_stop_worker_sampler)
        assert out.shape == (n, 500) and np.isfinite(out[-1]).all()
        del out
        rates[n] = n / wall / cores
        peaks = ", ".join(f"{a:.0f} -> {b:.0f}" for _, (a, b) in sorted(workers.items()))
        print(f"  {n:>10,} {wall:9.1f} {rates[n]:15.0f} {rss.before:5.0f} -> {rss.peak:.0f}"
              f"   {peaks}")
        os.remove(path)

    Yt, _, _ = make_compressed_sensing("giid", n_memory, A=A, random_state=1)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        amp.predict(Yt[:100])
        tic = time.perf_counter()
        amp.predict(Yt)
        wall = time.perf_counter() - tic
    finally:
        torch.set_num_threads(before)
    rate = n_memory / wall
    print(f"  in-memory predict, {n_memory:,} samples, this process, torch 1 thread: "
          f"{wall:.1f} s, {rate:.0f} samples/s/core")
    for n, r in rates.items():
        print(f"  dask / in-memory throughput per core at {n:,} samples: {r / rate:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a small version: 300 training pairs and "
                             "2 folds, 10,000 and 30,000 predicted samples")
    parser.add_argument("--n-samples", type=int, default=None,
                        help="samples of the large prediction run (default 1,000,000)")
    parser.add_argument("--chunk-size", type=int, default=10_000)
    parser.add_argument("--max-iter", type=int, default=10, help="AMP iterations")
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--skip-predict", action="store_true")
    parser.add_argument("--out-dir", default=None, help="where the .npy outputs go")
    parser.add_argument("--keep-malloc-trim", action="store_true",
                        help="keep Dask's MALLOC_TRIM_THRESHOLD_=65536 in the workers (slower)")
    args = parser.parse_args(argv)
    _quiet()
    if args.quick:
        n_train, cv, small, chunk, n_memory = 300, 2, 10_000, min(args.chunk_size, 5_000), 5_000
        large = args.n_samples or 30_000
    else:
        n_train, cv, small, chunk, n_memory = 2000, 3, 100_000, args.chunk_size, 20_000
        large = args.n_samples or 1_000_000
    print(f"{os.cpu_count()} cores; torch {torch.__version__}, dask {dask.__version__}; "
          f"psutil {'yes' if psutil else 'no (getrusage peaks)'}")
    out_dir = args.out_dir or tempfile.mkdtemp(prefix="unfold-bench-")
    if not args.keep_malloc_trim:
        # Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which also fixes
        # glibc's mmap threshold at 128 KiB: every large torch temporary is then a fresh,
        # page-faulting mmap, about 2x slower AMP here. Start the workers with glibc's defaults.
        dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None})
        os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    print("worker malloc: " + ("Dask's default (MALLOC_TRIM_THRESHOLD_=65536)"
                               if args.keep_malloc_trim else "glibc's defaults"))
    tic = time.perf_counter()
    cluster = LocalCluster(n_workers=N_WORKERS, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    client = Client(cluster)
    try:
        client.wait_for_workers(N_WORKERS)
        report = configure_workers(client)
        client.run(_warm_worker)
        print(f"LocalCluster({N_WORKERS} workers x 1 thread) up and warm in "
              f"{time.perf_counter() - tic:.1f} s; torch threads per task: "
              f"{sorted(r['torch_threads'] for r in report.values())}")
        if not args.skip_search:
            search(client, n_train, cv)
        if not args.skip_predict:
            sizes = sorted({min(small, large), large})
            out_of_core(client, sizes, chunk, n_memory, args.max_iter, out_dir)
    finally:
        client.close()
        cluster.close()
        if args.out_dir is None:
            shutil.rmtree(out_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
